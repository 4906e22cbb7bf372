/**
 * Pre-training of the initial policy (the pipeline's first step): next-token cross-entropy on
 * the Brown corpus in the model's own tokens (bytes, or the BPE of a model that carries a
 * tokenizer), AdamW with warm-up + cosine decay and global-norm clipping.
 *
 * Data: sentences become one token stream `BOS s₁ EOS BOS s₂ EOS …` (document order, so context
 * can run across sentences); with GPT-2's one `<|endoftext|>` for both it is `E s₁ E s₂ E …`. A
 * training row is a window of contextLength + 1 tokens; a fraction of windows start exactly at a
 * sentence's BOS at position 0 — the situation of every RL prompt row — and the rest start
 * anywhere, so the model also learns mid-sentence text and sentence ends (EOS). Targets that are
 * a BOS distinct from EOS (always right after EOS) are excluded from the loss.
 *
 * A Seq2Seq model trains on rows shaped like its task instead (seq2seq-data.ts): one sentence per
 * row, split at a random byte into prompt (encoded) and continuation (decoded), with the split
 * passed as `sourceLengths`. Its held-out log adds the continuation-only bits per byte.
 */
import * as tf from "@tensorflow/tfjs";
import { RlaifError, ValidationError } from "../errors.js";
import { Adam, clipByGlobalNorm } from "../learn/adam.js";
import { learningRate } from "../learn/schedule.js";
import { initBackend } from "./backend.js";
import type { CausalLM, ModelConfig } from "./causal-lm.js";
import { createModel } from "./checkpoint.js";
import { loadCorpusSplit } from "./corpus.js";
import { maskedCrossEntropy, selectLogprobs } from "./loss.js";
import { Rng } from "./rng.js";
import { sampleSplitRows } from "./seq2seq-data.js";
import { byteTokenizer, tokenizerOf } from "./tokenizer.js";
import type { Tokenizer } from "./tokenizer-types.js";

/** Settings of a pre-training run. */
export interface PretrainOptions {
  /** Any kind's config: a TransformerConfig, an RnnConfig (kind "gru" | "lstm") or a Seq2SeqConfig. */
  config: ModelConfig;
  /** Optimiser steps. */
  steps: number;
  /** Rows per step; each row is contextLength tokens. */
  batchSize: number;
  /** Peak learning rate. */
  lr: number;
  /** Seeds the initial weights, the data order and the held-out windows. */
  seed: number;
  /** Warm-up steps (default min(100, steps/10)). */
  warmupSteps?: number;
  /** Cosine floor as a fraction of lr (default 0.1). */
  minLrRatio?: number;
  /** AdamW weight decay on matrices (default 0.01). */
  weightDecay?: number;
  /** Gradient global-norm limit (default 1). */
  clipNorm?: number;
  /** Held-out evaluation every this many steps and after the last one (default 100). */
  evalEvery?: number;
  /** Held-out batches per evaluation (default 8). */
  evalBatches?: number;
  /** Fraction of rows starting at a sentence start (default 0.5). */
  alignedFraction?: number;
  /** Sentences to train on (default: the Brown split from corpus.ts). */
  sentences?: { train: string[]; heldOut: string[] };
  /** Continue training this model instead of a fresh one (its config must equal `config`). */
  model?: CausalLM;
  /** Called after every step. */
  onLog?: (entry: PretrainLog) => void;
}

/** One step's numbers; the held-out fields are present on evaluation steps. */
export interface PretrainLog {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  stepMs: number;
  heldOutLoss?: number;
  /** Held-out bits per byte of text (EOS counts as one byte: it stands for the newline). */
  heldOutBpb?: number;
  /** Held-out perplexity per token, exp(heldOutLoss): comparable between models of one tokenizer only. */
  heldOutPerplexity?: number;
  /** Seq2Seq only: held-out bits per byte of the continuations (the decoder's part), given the prompts. */
  heldOutTargetBpb?: number;
}

/** The corpus as one token stream plus the index of every sentence's BOS. */
export interface TokenStream {
  tokens: Uint16Array;
  starts: Uint32Array;
  /** The id whose positions are never targets (a BOS distinct from EOS), or null. */
  unscored: number | null;
}

/**
 * Builds `BOS s₁ EOS BOS s₂ EOS …` from sentences in `tok`'s ids; when BOS is the first EOS (GPT-2's
 * `<|endoftext|>`) one token separates sentences: `E s₁ E s₂ … E`.
 */
export function buildStream(sentences: readonly string[], tok: Tokenizer = byteTokenizer): TokenStream {
  if (tok.vocabSize > 65_536)
    throw new ValidationError("tokenizer", "pre-training supports up to 65,536 ids");
  const bos = tok.bos ?? (tok.eos[0] as number);
  const eos = tok.eos[0] as number;
  const shared = bos === eos;
  const encoded = sentences.map((s) => tok.encode(s));
  const tokens = new Uint16Array(encoded.reduce((n, e) => n + e.length + (shared ? 1 : 2), shared ? 1 : 0));
  const starts = new Uint32Array(encoded.length);
  let at = 0;
  encoded.forEach((e, i) => {
    starts[i] = shared && i > 0 ? at - 1 : at; // a shared separator is the BOS of what follows
    if (!shared || i === 0) tokens[at++] = bos;
    tokens.set(e, at);
    at += e.length;
    tokens[at++] = eos;
  });
  return { tokens, starts, unscored: shared ? null : bos };
}

/** A batch of windows: inputs, next-token targets and the loss mask, each [rows × T]. */
export interface WindowBatch {
  x: Int32Array;
  y: Int32Array;
  mask: Float32Array;
  /** Per row, the prompt's length (Seq2Seq rows; `ForwardOptions.sourceLengths`). */
  sourceLengths?: number[];
  /** `mask` restricted to the continuation (Seq2Seq rows). */
  targetMask?: Float32Array;
}

/** Draws `rows` windows of length T (+1 for the targets) from a stream. */
export function sampleWindows(
  stream: TokenStream,
  rows: number,
  t: number,
  rng: Rng,
  alignedFraction: number,
): WindowBatch {
  const { tokens, starts } = stream;
  if (tokens.length < t + 2) throw new ValidationError("sentences", `need more than ${t + 1} tokens of text`);
  const x = new Int32Array(rows * t);
  const y = new Int32Array(rows * t);
  const mask = new Float32Array(rows * t);
  for (let r = 0; r < rows; r++) {
    const aligned = rng.nextFloat() < alignedFraction;
    let s = aligned ? (starts[rng.nextInt(starts.length)] as number) : rng.nextInt(tokens.length - t - 1);
    s = Math.min(s, tokens.length - t - 1);
    for (let i = 0; i < t; i++) {
      x[r * t + i] = tokens[s + i] as number;
      const target = tokens[s + i + 1] as number;
      y[r * t + i] = target;
      mask[r * t + i] = target === stream.unscored ? 0 : 1;
    }
  }
  return { x, y, mask };
}

function batchTensors(b: WindowBatch, rows: number, t: number): [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D] {
  return [
    tf.tensor2d(b.x, [rows, t], "int32"),
    tf.tensor2d(b.y, [rows, t], "int32"),
    tf.tensor2d(b.mask, [rows, t]),
  ];
}

/** Bytes of text the scored targets of a batch stand for (a special, EOS, counts as one). */
function targetBytes(b: WindowBatch, tok: Tokenizer, mask: Float32Array): number {
  let n = 0;
  b.y.forEach((id, i) => {
    if (mask[i] !== 0) n += tok.tokenBytes(id).length || 1;
  });
  return n;
}

/**
 * Mean held-out negative log-likelihood (nats per scored token) over fixed windows, and over
 * their `targetMask` positions (the continuations of Seq2Seq rows; NaN when batches have none),
 * and the text bytes per scored target (nats per byte = loss / bytesPerToken).
 */
export function evaluateParts(
  model: CausalLM,
  batches: readonly WindowBatch[],
  rows: number,
): { loss: number; targetLoss: number; bytesPerToken: number; targetBytesPerToken: number } {
  const t = model.config.contextLength;
  const tok = tokenizerOf(model);
  let [nll, count, targetNll, targetCount, bytes, targetByteCount] = [0, 0, 0, 0, 0, 0];
  for (const b of batches) {
    const [x, y, m] = batchTensors(b, rows, t);
    const opts = { ops: "inference" as const, sourceLengths: b.sourceLengths };
    const [all, target] = tf.tidy(() => {
      const lp = selectLogprobs(model.forward(x, undefined, opts), y); // [B, T]
      const sum = (mask: tf.Tensor) => -(tf.sum(tf.mul(lp, mask)).dataSync()[0] as number);
      return [sum(m), b.targetMask ? sum(tf.tensor2d(b.targetMask, [rows, t])) : 0];
    });
    nll += all;
    count += b.mask.reduce((a, v) => a + v, 0);
    bytes += targetBytes(b, tok, b.mask);
    targetNll += target;
    targetCount += b.targetMask?.reduce((a, v) => a + v, 0) ?? 0;
    if (b.targetMask) targetByteCount += targetBytes(b, tok, b.targetMask);
    tf.dispose([x, y, m]);
  }
  return {
    loss: nll / Math.max(count, 1),
    targetLoss: targetCount > 0 ? targetNll / targetCount : Number.NaN,
    bytesPerToken: bytes / Math.max(count, 1),
    targetBytesPerToken: targetByteCount / Math.max(targetCount, 1),
  };
}

/** Mean held-out negative log-likelihood (nats per scored token) over fixed windows. */
export function evaluate(model: CausalLM, batches: readonly WindowBatch[], rows: number): number {
  return evaluateParts(model, batches, rows).loss;
}

/** Pre-trains (or continues training) a model and returns it; see PretrainOptions. */
export async function pretrain(o: PretrainOptions): Promise<CausalLM> {
  await initBackend();
  if (!Number.isInteger(o.steps) || o.steps < 1)
    throw new ValidationError("steps", "must be a positive integer");
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1)
    throw new ValidationError("batchSize", "must be a positive integer");
  if (!(o.lr > 0)) throw new ValidationError("lr", "must be positive");
  const model = o.model ?? createModel(o.config, o.seed);
  if (JSON.stringify(model.config) !== JSON.stringify({ ...model.config, ...o.config })) {
    throw new ValidationError("model", "config differs from options.config");
  }
  const t = model.config.contextLength;
  const rows = o.batchSize;
  const aligned = o.alignedFraction ?? 0.5;
  const sentences = o.sentences ?? loadCorpusSplit();
  const train = buildStream(sentences.train, tokenizerOf(model));
  const heldOut = buildStream(sentences.heldOut, tokenizerOf(model));
  const split = model.kind === "seq2seq";
  const draw = (s: TokenStream, r: Rng) =>
    split ? sampleSplitRows(s, rows, t, r) : sampleWindows(s, rows, t, r, aligned);
  const evalRng = new Rng(o.seed, 0x6576616c);
  const evalBatches = Array.from({ length: o.evalBatches ?? 8 }, () => draw(heldOut, evalRng));
  const rng = new Rng(o.seed, 0x64617461);
  // AdamW: β2 = 0.99 (small batches are noisy), decay on matrices only (GPT practice).
  const opt = new Adam({
    learningRate: o.lr,
    beta2: 0.99,
    weightDecay: o.weightDecay ?? 0.01,
    decayMatricesOnly: true,
  });
  const variables = model.variables();
  const schedule = {
    lr: o.lr,
    warmupSteps: o.warmupSteps ?? Math.min(100, Math.ceil(o.steps / 10)),
    totalSteps: o.steps,
    minRatio: o.minLrRatio ?? 0.1,
  };
  const evalEvery = o.evalEvery ?? 100;
  try {
    for (let step = 0; step < o.steps; step++) {
      const started = performance.now();
      const lr = learningRate(step, schedule);
      const batch = draw(train, rng);
      const [x, y, m] = batchTensors(batch, rows, t);
      const fwd = () => model.forward(x, undefined, { sourceLengths: batch.sourceLengths });
      const { value, grads } = tf.variableGrads(() => maskedCrossEntropy(fwd(), y, m), variables);
      const loss = value.dataSync()[0] as number;
      const { clipped, globalNorm } = clipByGlobalNorm(
        variables.map((v) => grads[v.name] as tf.Tensor),
        o.clipNorm ?? 1,
      );
      const norm = globalNorm.dataSync()[0] as number;
      const scratch = [x, y, m, value, globalNorm, ...Object.values(grads), ...clipped];
      if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
        tf.dispose(scratch);
        throw new RlaifError(`pre-training diverged at step ${step}: loss ${loss}, grad norm ${norm}`);
      }
      opt.learningRate = lr;
      opt.applyGradients(variables, clipped);
      tf.dispose(scratch);
      const entry: PretrainLog = {
        step,
        loss,
        lr,
        gradNorm: norm,
        stepMs: performance.now() - started,
      };
      if ((step + 1) % evalEvery === 0 || step === o.steps - 1) {
        const held = evaluateParts(model, evalBatches, rows);
        entry.heldOutLoss = held.loss;
        entry.heldOutPerplexity = Math.exp(held.loss);
        entry.heldOutBpb = held.loss / held.bytesPerToken / Math.LN2;
        if (split) entry.heldOutTargetBpb = held.targetLoss / held.targetBytesPerToken / Math.LN2;
      }
      o.onLog?.(entry);
      // Yield so signals and timers are served during a long run.
      await new Promise((resolve) => setImmediate(resolve));
    }
  } catch (e) {
    if (o.model === undefined) model.dispose();
    throw e;
  } finally {
    opt.dispose();
  }
  return model;
}
