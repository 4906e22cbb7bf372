/**
 * Batched generation with a KV cache or recurrent state (any `CausalLM`), and batched scoring of
 * given completions.
 *
 * Rows are left-padded with per-row position ids and a key padding mask, so a row's tokens and
 * log-probs do not depend on which other prompts share its batch. Sampling happens in JS from the
 * model's probabilities with a seeded xoshiro128** stream per row (seed, row index): the same
 * seed, prompts and weights give the same tokens, and G copies of one prompt in a batch give G
 * different samples.
 *
 * Log-prob convention: every `logprobs` entry is log π_θ(token | prefix) under the *unmodified*
 * model distribution (temperature 1, no top-k/top-p truncation), whatever the sampling settings.
 * That is the quantity REINFORCE differentiates and the KL to the reference is computed from, and
 * it equals what `sequenceLogprobs` recomputes. With temperature ≠ 1 or truncation the tokens were
 * drawn from a different distribution; learners needing the exact behaviour probabilities must
 * sample with temperature 1, topK 0, topP 1.
 *
 * Stop sequences: a row stops as soon as its completion's bytes (the byte tokens 0–255 it sampled;
 * BOS/EOS contribute none) end with one of `stop`, matched on bytes, so a multi-byte character or
 * a stop string spanning several tokens is found wherever the token boundaries fall. The tokens
 * that spelled the stop sequence stay in `tokens` and `logprobs`, exactly as a final EOS does:
 * they were sampled, the learner's Σ_t log π_θ(y_t) must run over every action taken (dropping
 * them would silently train on a different trajectory than the one the reward and the behaviour
 * log-probs belong to), and a recompute over `tokens` (`sequenceLogprobs`, the reference's
 * log-probs) matches them one for one. Only the text leaves the stop sequence out
 * (`completionText`), as OpenAI-style APIs do, so a scorer and a user see the completion without
 * its terminator.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import { type CausalLM, type DecodingState, disposeState } from "./causal-lm.js";
import { selectLogprobs } from "./loss.js";
import { Rng } from "./rng.js";
import { BOS, decode, EOS } from "./tokenizer.js";

/** How to pick tokens. */
export interface SamplingParams {
  /** Most tokens to generate per row (EOS included when it ends a row). */
  maxNewTokens: number;
  /** Softmax temperature; 0 = greedy (argmax, lowest id on ties). */
  temperature: number;
  /** Keep only the k most likely tokens; 0 = off. */
  topK: number;
  /** Keep the smallest most-likely set with probability ≥ topP; 1 = off. */
  topP: number;
  /** Seeds the per-row random streams (row r uses stream (seed, r)). */
  seed: number;
  /** Stop a row when it samples EOS (the EOS is returned as its last token). */
  stopAtEos: boolean;
  /**
   * Stop a row when its completion's bytes end with one of these non-empty strings (see the module
   * doc: the stop's tokens are kept, `completionText` leaves it out). Empty or absent = none.
   */
  stop?: readonly string[];
}

/** Why a row stopped: its token budget, an EOS, a stop sequence, or the model's context length. */
export type FinishReason = "length" | "eos" | "stop" | "context";

/** One generated row. */
export interface GenerationResult {
  /** Sampled token ids (prompt not included). */
  tokens: number[];
  /** log π_θ(token | prefix) of each sampled token under the unmodified model (see module doc). */
  logprobs: number[];
  finishReason: FinishReason;
  /**
   * The stop sequence that ended the row (finishReason "stop"; the longest one when several
   * match at once), whose bytes are the last bytes of `tokens`; absent otherwise.
   */
  stop?: string;
}

/** Per-token streaming callback: row index, token id and its log π_θ. */
export type OnToken = (row: number, tokenId: number, logprob: number) => void;

/** The row the model reads for a prompt: BOS followed by the prompt ids (BOS is not doubled). */
export function promptRow(prompt: readonly number[]): number[] {
  return prompt[0] === BOS ? [...prompt] : [BOS, ...prompt];
}

/** Checks sampling parameters; throws ValidationError naming the bad field. */
export function validateSamplingParams(p: SamplingParams): SamplingParams {
  const bad = (field: string, reason: string): never => {
    throw new ValidationError(`params.${field}`, reason);
  };
  if (!Number.isInteger(p.maxNewTokens) || p.maxNewTokens < 1) bad("maxNewTokens", "must be an integer ≥ 1");
  if (!(p.temperature >= 0) || !Number.isFinite(p.temperature)) bad("temperature", "must be finite and ≥ 0");
  if (!Number.isInteger(p.topK) || p.topK < 0) bad("topK", "must be an integer ≥ 0");
  if (!(p.topP > 0 && p.topP <= 1)) bad("topP", "must be in (0, 1]");
  if (!Number.isSafeInteger(p.seed)) bad("seed", "must be a safe integer");
  (p.stop ?? []).forEach((s, i) => {
    if (typeof s !== "string" || s === "") bad(`stop[${i}]`, "must be a non-empty string");
  });
  return p;
}

const utf8 = new TextEncoder();

/** The UTF-8 bytes of each stop sequence. */
export function stopBytes(stop: readonly string[] | undefined): Uint8Array[] {
  return (stop ?? []).map((s) => utf8.encode(s));
}

/** Whether `bytes` ends with `tail`. */
function endsWith(bytes: readonly number[], tail: Uint8Array, length = tail.length): boolean {
  if (length > bytes.length) return false;
  const off = bytes.length - length;
  for (let k = 0; k < length; k++) if (bytes[off + k] !== tail[k]) return false;
  return true;
}

/** Index of the longest stop sequence that `bytes` ends with, or −1. */
export function matchStop(bytes: readonly number[], stops: readonly Uint8Array[]): number {
  let best = -1;
  stops.forEach((s, i) => {
    if (endsWith(bytes, s) && (best < 0 || s.length > (stops[best] as Uint8Array).length)) best = i;
  });
  return best;
}

/**
 * How many trailing bytes of `bytes` could still be the start of a stop sequence (the longest
 * proper prefix of any stop that `bytes` ends with): a streaming server holds them back until the
 * next bytes show whether they belong to the stop (never sent) or to the text.
 */
export function stopHoldback(bytes: readonly number[], stops: readonly Uint8Array[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, bytes.length); k > hold; k--) {
      if (endsWith(bytes, s, k)) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

/** The byte tokens (0–255) of a completion: what its text decodes from. */
export function completionBytes(tokens: readonly number[]): number[] {
  return tokens.filter((id) => id < 256);
}

/**
 * A completion's text: its bytes decoded as UTF-8, without a final EOS (special tokens carry no
 * bytes) and without the stop sequence that ended it.
 */
export function completionText(r: Pick<GenerationResult, "tokens" | "stop">): string {
  const bytes = completionBytes(r.tokens);
  const cut = r.stop ? utf8.encode(r.stop).length : 0;
  return decode(bytes.slice(0, bytes.length - cut));
}

function checkRows(model: CausalLM, rows: number[][], field: string, extra: (i: number) => number): void {
  const { contextLength, vocabSize } = model.config;
  rows.forEach((row, i) => {
    const bad = row.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
    if (bad >= 0)
      throw new ValidationError(`${field}[${i}][${bad}]`, `token id must be in [0, ${vocabSize})`);
    if (row.length + extra(i) > contextLength) {
      throw new ValidationError(
        `${field}[${i}]`,
        `needs ${row.length + extra(i)} positions (BOS included) but the context length is ${contextLength}`,
      );
    }
  });
}

/** log-softmax in float64 of one row of logits. */
function logSoftmax(z: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of z) if (v > max) max = v;
  let sum = 0;
  for (const v of z) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(z, (v) => v - lse);
}

/** Picks a token from one row of logits according to `p` (see SamplingParams). */
export function chooseToken(z: Float32Array, p: SamplingParams, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < z.length; i++) if ((z[i] as number) > (z[best] as number)) best = i;
  if (p.temperature === 0) return best;
  const max = z[best] as number;
  let ids = Array.from(z.keys());
  if (p.topK > 0 || p.topP < 1) {
    ids.sort((a, b) => (z[b] as number) - (z[a] as number) || a - b);
    if (p.topK > 0) ids = ids.slice(0, p.topK);
  }
  // q_i ∝ exp((z_i − max) / T)
  const w = ids.map((i) => Math.exp(((z[i] as number) - max) / p.temperature));
  let total = w.reduce((a, b) => a + b, 0);
  if (p.topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < w.length && cum < p.topP * total) cum += w[keep++] as number;
    ids = ids.slice(0, Math.max(1, keep));
    total = cum;
  }
  let u = rng.nextFloat() * total;
  for (let k = 0; k < ids.length; k++) {
    u -= w[k] as number;
    if (u < 0) return ids[k] as number;
  }
  return ids[ids.length - 1] as number;
}

/**
 * Generates a continuation for every prompt (token ids, usually `encode(text)`; BOS is
 * prepended). A prompt row that leaves no room for one new token within the context length is a
 * ValidationError. Rows finish independently; `onToken` sees tokens as they are sampled.
 *
 * Asynchronous on purpose: it yields to the event loop after every token, so a server streams
 * tokens as they come, keeps answering health checks during a long generation, and stops
 * computing (rejecting with the signal's reason) as soon as `signal` fires, e.g. at the caller's
 * deadline.
 */
export async function generate(
  model: CausalLM,
  prompts: number[][],
  p: SamplingParams,
  onToken?: OnToken,
  signal?: AbortSignal,
): Promise<GenerationResult[]> {
  validateSamplingParams(p);
  const rows = prompts.map(promptRow);
  checkRows(model, rows, "prompts", () => 1);
  if (rows.length === 0) return [];
  const g = startGeneration(model, rows, p);
  let input = prefill(rows);
  let cache: DecodingState | null = null;
  try {
    for (let t = 0; t < g.maxSteps; t++) {
      const out = modelStep(model, g, input, cache);
      cache = out.cache;
      const next = sampleStep(g, lastLogits(out.logits, g.vocabSize), onToken);
      if (next === null) break;
      await new Promise((resolve) => setImmediate(resolve));
      signal?.throwIfAborted();
      input = stepInput(next.tokens, next.positions, 1);
    }
  } finally {
    tf.dispose([input.tokens, input.positions]);
    disposeState(cache);
  }
  return g.results;
}

/** What `generate` tracks between model steps; arrays are per row. */
interface Generation {
  readonly p: SamplingParams;
  readonly contextLength: number;
  readonly vocabSize: number;
  /** Prompt row lengths, BOS included. */
  readonly lens: readonly number[];
  /** The results so far; a row's `finishReason` is final once it is no longer active. */
  readonly results: GenerationResult[];
  readonly active: boolean[];
  readonly rngs: readonly Rng[];
  /** The stop sequences' bytes, and each row's completion bytes so far (kept only when there are stops). */
  readonly stops: readonly Uint8Array[];
  readonly bytes: number[][];
  /** The key mask, one column per position fed so far (0: left padding, or a finished row's filler). */
  readonly maskCols: number[][];
  /** Steps after which every row has met its token budget or the context length. */
  readonly maxSteps: number;
}

/** Token ids and position ids [B, S] of one model step. */
interface StepInput {
  tokens: tf.Tensor2D;
  positions: tf.Tensor2D;
}

/** Per-row state before the first token: active, seeded streams (seed, row), the prompts' key mask. */
function startGeneration(model: CausalLM, rows: number[][], p: SamplingParams): Generation {
  const { contextLength, vocabSize } = model.config;
  const lens = rows.map((r) => r.length);
  const width = Math.max(...lens);
  return {
    p,
    contextLength,
    vocabSize,
    lens,
    results: rows.map(() => ({ tokens: [], logprobs: [], finishReason: "length" })),
    active: rows.map(() => true),
    rngs: rows.map((_, r) => new Rng(p.seed, r)),
    stops: stopBytes(p.stop),
    bytes: rows.map(() => []),
    maskCols: lens.map((len) => Array.from({ length: width }, (_, j) => (j >= width - len ? 1 : 0))),
    maxSteps: Math.max(...lens.map((l) => Math.min(p.maxNewTokens, contextLength - l))),
  };
}

/** int32 tensors [B, S] of flat row-major token and position ids. */
function stepInput(tokens: Int32Array, positions: Int32Array, s: number): StepInput {
  const b = tokens.length / s;
  return {
    tokens: tf.tensor2d(tokens, [b, s], "int32"),
    positions: tf.tensor2d(positions, [b, s], "int32"),
  };
}

/** Prefill input: the prompts left-padded, positions counted from each row's first real token. */
function prefill(rows: number[][]): StepInput {
  const width = Math.max(...rows.map((r) => r.length));
  const tok = new Int32Array(rows.length * width);
  const pos = new Int32Array(rows.length * width);
  rows.forEach((row, r) => {
    const pad = width - row.length;
    row.forEach((id, j) => {
      tok[r * width + pad + j] = id;
      pos[r * width + pad + j] = j;
    });
  });
  return stepInput(tok, pos, width);
}

/**
 * One model step over `input` from `past` (null before the prefill), under the key mask so far.
 * Frees `input`, the mask and `past`; the caller owns the returned logits [B, S, V] and state.
 */
function modelStep(
  model: CausalLM,
  g: Generation,
  input: StepInput,
  past: DecodingState | null,
): { logits: tf.Tensor3D; cache: DecodingState } {
  const mask = tf.tensor2d(g.maskCols.flat(), [g.maskCols.length, g.maskCols[0]?.length ?? 0]);
  const out = model.step(input.tokens, input.positions, mask, past);
  tf.dispose([mask, input.tokens, input.positions]);
  disposeState(past);
  return out;
}

/** The last position's logits of every row, flat [B·V], read out of `logits` [B, S, V] (freed). */
function lastLogits(logits: tf.Tensor3D, v: number): Float32Array {
  const [b, s] = logits.shape;
  const last = (
    s === 1 ? logits.dataSync() : tf.tidy(() => logits.slice([0, s - 1, 0], [b, 1, v]).dataSync())
  ) as Float32Array;
  logits.dispose();
  return last;
}

/**
 * Samples one token for every active row from its logits (rows in order, so each row's stream
 * sees the same draws whatever the others do) and returns the next step's token and position ids
 * [B], or null when every row has finished. A finished row is fed a masked filler at position
 * contextLength − 1, which no other row's results can see.
 */
function sampleStep(
  g: Generation,
  last: Float32Array,
  onToken: OnToken | undefined,
): { tokens: Int32Array; positions: Int32Array } | null {
  const b = g.results.length;
  const v = g.vocabSize;
  const tokens = new Int32Array(b);
  const positions = new Int32Array(b);
  for (let r = 0; r < b; r++) {
    const id = g.active[r] ? sampleRow(g, r, last.subarray(r * v, (r + 1) * v), onToken) : null;
    if (id === null) {
      positions[r] = g.contextLength - 1;
      g.maskCols[r]?.push(0);
    } else {
      tokens[r] = id;
      positions[r] = (g.lens[r] as number) + (g.results[r] as GenerationResult).tokens.length - 1;
      g.maskCols[r]?.push(1);
    }
  }
  return g.active.some((a) => a) ? { tokens, positions } : null;
}

/**
 * Picks row r's next token from its logits z and records it with its log π_θ; returns it, or
 * null when the row has just finished (then it is no longer active).
 */
function sampleRow(g: Generation, r: number, z: Float32Array, onToken: OnToken | undefined): number | null {
  const res = g.results[r] as GenerationResult;
  const id = chooseToken(z, g.p, g.rngs[r] as Rng);
  const lp = logSoftmax(z)[id] as number;
  res.tokens.push(id);
  res.logprobs.push(lp);
  onToken?.(r, id, lp);
  if (!finish(g, r, id)) return id;
  g.active[r] = false;
  return null;
}

/**
 * Whether row r ends with the token `id` it just sampled, recording why in its result: an EOS
 * (with stopAtEos), a stop sequence its bytes now end with, its token budget, or the context.
 */
function finish(g: Generation, r: number, id: number): boolean {
  const res = g.results[r] as GenerationResult;
  let stopped = -1;
  if (id < 256 && g.stops.length > 0) {
    (g.bytes[r] as number[]).push(id);
    stopped = matchStop(g.bytes[r] as number[], g.stops);
  }
  if (g.p.stopAtEos && id === EOS) res.finishReason = "eos";
  else if (stopped >= 0) {
    res.finishReason = "stop";
    res.stop = g.p.stop?.[stopped];
  } else if (res.tokens.length >= g.p.maxNewTokens) res.finishReason = "length";
  else if ((g.lens[r] as number) + res.tokens.length >= g.contextLength) res.finishReason = "context";
  else return false;
  return true;
}

/** Rows per forward pass in `sequenceLogprobs` (bounds memory for large requests). */
const SCORE_CHUNK = 64;

/**
 * log π(completion token | prompt, earlier completion tokens) for every completion token, by one
 * full forward pass per chunk of rows (right-padded; causal attention keeps padding out).
 * Each row [BOS, ...prompt, ...completion] must fit in the context length.
 */
export function sequenceLogprobs(model: CausalLM, prompts: number[][], completions: number[][]): number[][] {
  if (prompts.length !== completions.length) {
    throw new ValidationError("completions", `has ${completions.length} rows for ${prompts.length} prompts`);
  }
  const heads = prompts.map(promptRow);
  checkRows(model, heads, "prompts", (i) => (completions[i] as number[]).length);
  checkRows(model, completions, "completions", () => 0);
  const out: number[][] = [];
  for (let start = 0; start < heads.length; start += SCORE_CHUNK) {
    const idx = heads.slice(start, start + SCORE_CHUNK).map((_, k) => start + k);
    const full = idx.map((i) => [...(heads[i] as number[]), ...(completions[i] as number[])]);
    const width = Math.max(...full.map((r) => r.length));
    if (width < 2) {
      out.push(...idx.map(() => []));
      continue;
    }
    const x = new Int32Array(full.length * (width - 1));
    const y = new Int32Array(full.length * (width - 1));
    full.forEach((row, r) => {
      for (let j = 0; j + 1 < row.length; j++) {
        x[r * (width - 1) + j] = row[j] as number;
        y[r * (width - 1) + j] = row[j + 1] as number;
      }
    });
    const lp = tf.tidy(() => {
      const xs = tf.tensor2d(x, [full.length, width - 1], "int32");
      const ys = tf.tensor2d(y, [full.length, width - 1], "int32");
      return selectLogprobs(
        // the prompt's extent (BOS + prompt) per row, for models that encode it (Seq2Seq)
        model.forward(xs, undefined, {
          ops: "inference",
          sourceLengths: idx.map((i) => Math.min((heads[i] as number[]).length, width - 1)),
        }),
        ys,
      ).dataSync() as Float32Array;
    });
    idx.forEach((i, r) => {
      const p0 = (heads[i] as number[]).length;
      const n = (completions[i] as number[]).length;
      out.push(Array.from({ length: n }, (_, j) => lp[r * (width - 1) + p0 - 1 + j] as number));
    });
  }
  return out;
}
