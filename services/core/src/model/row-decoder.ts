/**
 * Incremental decoding in slots, the model side of continuous batching (continuous-sampler.ts):
 * rows join a running batch at a token boundary and leave when they finish, so each model kind
 * keeps its decoding state (a Transformer's KV cache, an RNN's recurrent state) per slot, in
 * buffers allocated once per batch size and written in place (row-buffer.ts).
 *
 * Batch invariance, the contract every decoder keeps: a row's logits depend only on its own
 * tokens, never on which slots it occupies, which rows share its batch or its prefill call, or
 * when it joined. So a request's tokens and log-probs are bit-identical whether it ran alone or
 * with others. What that takes, measured on tfjs-wasm: every product computes a row (or a batch
 * slice) with the same kernel whatever the row count (wasm-kernels.ts makes BatchMatMul's choice
 * depend on the slice shape only; XNNPACK's fully-connected kernel is row-invariant; OpenBLAS is
 * not, so decoders run under blas-kernels.ts's `batchInvariant`, fixed-size calls); reductions
 * over a row (softmax) run at a width fixed by the row itself, because their sums depend on the
 * width (7.8% of rows changed bits when masked columns were appended); padding is exact (a masked
 * key weighs exactly 0, a masked recurrent step leaves the state exactly as it was). Native
 * backends (tfjs-node, GPUs) pick kernels by size too: there rows agree to rounding, not bits.
 */
import * as tf from "@tensorflow/tfjs";
import { batchInvariant } from "./blas-kernels.js";

/** The decoding state of `capacity` slots (each free or holding one row). */
export interface RowDecoder {
  /** Slots allocated. */
  readonly capacity: number;
  /** Re-lays the slots: new slot i holds old slot keep[i]; slots past keep.length are free. */
  resize(capacity: number, keep: readonly number[]): void;
  /**
   * Which prompt lengths may share one `prefill` call: prompts whose keys are equal. A decoder
   * whose prefill results depend on the call's width (a Transformer's attention) groups by a
   * width bucket a prompt's own length determines.
   */
  prefillKey(length: number): number;
  /**
   * Encodes `prompts` (token rows, BOS included, all of one prefill key) and copies prompt i's
   * state into every slot of slots[i] (G samples of one prompt share its prefill). Returns the
   * logits of each prompt's next token, flat [prompts × V].
   */
  prefill(prompts: readonly (readonly number[])[], slots: readonly (readonly number[])[]): Float32Array;
  /**
   * Feeds one token to every slot, tokens[s] at position positions[s] (the index of that token in
   * its row, BOS = 0; a free slot may get anything, e.g. 0 at 0). Returns the logits of every
   * slot's next token, flat [capacity × V].
   */
  step(tokens: Int32Array, positions: Int32Array): Float32Array;
  /** Frees the buffers. */
  dispose(): void;
}

/** Granularity of the widths batched passes are padded to (see `widthBucket`). */
export const WIDTH_BUCKET = 8;

/**
 * The width a row of `length` tokens is padded to in a batched pass: the next multiple of
 * WIDTH_BUCKET, at most `max`. A function of the row's own length only, so rows of different
 * lengths in one bucket share a pass without changing each other's results, and a width never
 * falls under the row count where the matmul kernels switch strategy.
 */
export function widthBucket(length: number, max: number): number {
  return Math.min(max, Math.ceil(length / WIDTH_BUCKET) * WIDTH_BUCKET);
}

/**
 * Runs one batched pass (inside a tidy, under `batchInvariant` with `rows` per call) and reads
 * its output out of the backend. The tensor leaves the tidy and is read after it: a tidy walks a returned typed array
 * element by element (measured: 0.8 of 9 s of a serving benchmark's CPU time for 64 × 258 logits
 * a step).
 */
export function readPass(pass: () => tf.Tensor, rows?: number): Float32Array {
  const out = batchInvariant(() => tf.tidy(pass), rows);
  try {
    return out.dataSync() as Float32Array;
  } finally {
    out.dispose();
  }
}
