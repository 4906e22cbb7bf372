/**
 * Generation (any `CausalLM`, through the continuously batched sampler of continuous-sampler.ts)
 * and batched scoring of given completions.
 *
 * A row's tokens and log-probs do not depend on which other rows share its batch: the decoders
 * are batch-invariant (row-decoder.ts), and scoring pads a row to a width its own length
 * determines. Sampling happens in JS from the model's probabilities with a seeded xoshiro128**
 * stream per row (seed, row index): the same seed, prompts and weights give the same tokens, and
 * G copies of one prompt in a request give G different samples.
 *
 * Log-prob convention: every `logprobs` entry is log π_θ(token | prefix) under the *unmodified*
 * model distribution (temperature 1, no top-k/top-p truncation), whatever the sampling settings.
 * That is the quantity REINFORCE differentiates and the KL to the reference is computed from, and
 * it equals what `sequenceLogprobs` recomputes. With temperature ≠ 1 or truncation the tokens were
 * drawn from a different distribution; learners needing the exact behaviour probabilities must
 * sample with temperature 1, topK 0, topP 1.
 *
 * Stop sequences: a row stops as soon as its completion's bytes (each sampled token's bytes in
 * the model's tokenizer; BOS/EOS contribute none) contain one of `stop`, matched on bytes, so a
 * multi-byte character or a stop string spanning several tokens, or ending inside a sub-word
 * token, is found wherever the token boundaries fall. The tokens
 * that spelled the stop sequence stay in `tokens` and `logprobs`, exactly as a final EOS does:
 * they were sampled, the learner's Σ_t log π_θ(y_t) must run over every action taken (dropping
 * them would silently train on a different trajectory than the one the reward and the behaviour
 * log-probs belong to), and a recompute over `tokens` (`sequenceLogprobs`, the reference's
 * log-probs) matches them one for one. Only the text leaves the stop sequence (and what its last
 * token wrote after it) out (`completionText`), as OpenAI-style APIs do, so a scorer and a user see the completion without
 * its terminator.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import type { CausalLM } from "./causal-lm.js";
import { ContinuousSampler } from "./continuous-sampler.js";
import { selectLogprobs } from "./loss.js";
import { readPass, widthBucket } from "./row-decoder.js";
import {
  checkRows,
  type GenerationResult,
  type OnToken,
  promptRows,
  type SamplingParams,
} from "./sampling.js";
import { tokenizerOf } from "./tokenizer.js";

/**
 * Generates a continuation for every prompt (token ids, usually `encode(text)`; BOS is
 * prepended). A prompt row that leaves no room for one new token within the context length is a
 * ValidationError. Rows finish independently; `onToken` sees tokens as they are sampled.
 *
 * Asynchronous on purpose: it yields to the event loop after every token, so a server streams
 * tokens as they come, keeps answering health checks during a long generation, and stops
 * computing (rejecting with the signal's reason) as soon as `signal` fires, e.g. at the caller's
 * deadline. A server sharing passes between concurrent calls keeps one ContinuousSampler instead.
 */
export async function generate(
  model: CausalLM,
  prompts: number[][],
  p: SamplingParams,
  onToken?: OnToken,
  signal?: AbortSignal,
): Promise<GenerationResult[]> {
  const sampler = new ContinuousSampler(model);
  try {
    return await sampler.submit(prompts, p, onToken, signal);
  } finally {
    // the decoder's buffers are freed before the caller sees the results
    await sampler.idle();
  }
}

/** Rows per forward pass in `sequenceLogprobs` (bounds memory for large requests). */
const SCORE_CHUNK = 64;

/**
 * Rows per sgemm call of a scoring pass (see blas-kernels.ts's `batchInvariant`): scoring passes
 * are tall (up to 64 × 48 token rows), where calls of 64 rows measured ~15% faster than the
 * decoding steps' 16 (the weights are packed once per call).
 */
const SCORE_CALL_ROWS = 64;

/**
 * Which rows may share a scoring pass: those padded to the same width (a bucket of the row's own
 * length: a causal LM's logits at t do not depend on later padding, but the attention's softmax
 * bits depend on its width) and, for a Seq2Seq model, with the same prompt length (its encoder's
 * width). So a row's log-probs do not depend on the rows scored with it.
 */
function scoreGroup(model: CausalLM, headLength: number, width: number): string {
  return model.kind === "seq2seq" ? `${width}:${headLength}` : `${width}`;
}

/**
 * Checks what `sequenceLogprobs` is given: one completion per prompt, token ids in range, every
 * row within the context length. Throws ValidationError naming the row (batchers check each
 * request before merging, so one bad request fails alone).
 */
export function checkScoring(model: CausalLM, prompts: number[][], completions: number[][]): void {
  if (prompts.length !== completions.length) {
    throw new ValidationError("completions", `has ${completions.length} rows for ${prompts.length} prompts`);
  }
  const heads = promptRows(prompts, tokenizerOf(model).bos);
  checkRows(model, heads, "prompts", (i) => (completions[i] as number[]).length);
  checkRows(model, completions, "completions", () => 0);
}

/**
 * log π(completion token | prompt, earlier completion tokens) for every completion token, by one
 * full forward pass per group of rows of one width (right-padded; causal attention keeps padding
 * out), in chunks of SCORE_CHUNK rows. Each row [BOS, ...prompt, ...completion] must fit in the
 * context length.
 */
export function sequenceLogprobs(model: CausalLM, prompts: number[][], completions: number[][]): number[][] {
  checkScoring(model, prompts, completions);
  const heads = promptRows(prompts, tokenizerOf(model).bos);
  const out: number[][] = heads.map(() => []);
  const groups = new Map<string, { width: number; rows: number[] }>();
  heads.forEach((head, i) => {
    const inputs = head.length + (completions[i] as number[]).length - 1; // the last token is no input
    if (inputs < 1 || (completions[i] as number[]).length === 0) return;
    const width = widthBucket(inputs, model.config.contextLength);
    const key = scoreGroup(model, head.length, width);
    const group = groups.get(key) ?? { width, rows: [] };
    groups.set(key, group);
    group.rows.push(i);
  });
  for (const { width, rows } of groups.values()) {
    for (let start = 0; start < rows.length; start += SCORE_CHUNK) {
      const idx = rows.slice(start, start + SCORE_CHUNK);
      const x = new Int32Array(idx.length * width);
      const y = new Int32Array(idx.length * width);
      idx.forEach((i, r) => {
        const row = [...(heads[i] as number[]), ...(completions[i] as number[])];
        for (let j = 0; j + 1 < row.length; j++) {
          x[r * width + j] = row[j] as number;
          y[r * width + j] = row[j + 1] as number;
        }
      });
      const lp = readPass(() => {
        const xs = tf.tensor2d(x, [idx.length, width], "int32");
        const ys = tf.tensor2d(y, [idx.length, width], "int32");
        return selectLogprobs(
          // the prompt's extent (BOS + prompt) per row, for models that encode it (Seq2Seq)
          model.forward(xs, undefined, {
            ops: "inference",
            sourceLengths: idx.map((i) => Math.min((heads[i] as number[]).length, width)),
          }),
          ys,
        );
      }, SCORE_CALL_ROWS);
      idx.forEach((i, r) => {
        const p0 = (heads[i] as number[]).length;
        const n = (completions[i] as number[]).length;
        out[i] = Array.from({ length: n }, (_, j) => lp[r * width + p0 - 1 + j] as number);
      });
    }
  }
  return out;
}
