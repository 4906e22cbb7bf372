/**
 * A per-slot KV cache at absolute positions, shared by the attention models' row decoders (the
 * Transformer's, the Llama family's): per layer, K and V buffers [capacity, heads, W, D] with
 * W = contextLength, the key and value of a row's token at position p in column p of its slot.
 *
 * Why the full width and in-place writes: see transformer-decoder.ts (a row reads its keys from
 * the same columns in the same order whatever the other rows are, so it stays bit-identical alone
 * or batched; writing columns in the wasm heap costs 0.1 ms a step where concat grew per token).
 */
import type * as tf from "@tensorflow/tfjs";
import * as L from "./layers.js";
import { RowBuffer } from "./row-buffer.js";

/** Keys and values of `layers` attention layers with `heads` kv heads of `headDim`, per slot. */
export class KvSlots {
  private readonly k: RowBuffer[];
  private readonly v: RowBuffer[];

  constructor(
    layers: number,
    private readonly heads: number,
    private readonly width: number,
    private readonly headDim: number,
    capacity: number,
  ) {
    const row = [heads, width, headDim];
    this.k = Array.from({ length: layers }, () => new RowBuffer(row, capacity));
    this.v = Array.from({ length: layers }, () => new RowBuffer(row, capacity));
  }

  /** Slots allocated. */
  get capacity(): number {
    return this.k[0]?.capacity ?? 0;
  }

  /** Layer i's keys and values [capacity, heads, W, D], valid until the next write. */
  tensors(layer: number): { k: tf.Tensor4D; v: tf.Tensor4D } {
    return {
      k: this.k[layer]?.tensor() as tf.Tensor4D,
      v: this.v[layer]?.tensor() as tf.Tensor4D,
    };
  }

  /** See RowDecoder.resize. */
  resize(capacity: number, keep: readonly number[]): void {
    for (const b of [...this.k, ...this.v]) b.resize(capacity, keep);
  }

  /**
   * Copies prompt r's keys and values (columns 0..W'−1 of kh, vh [n, heads, W', D]) into every
   * slot of slots[r].
   */
  copyPrompts(
    layer: number,
    kh: tf.Tensor4D,
    vh: tf.Tensor4D,
    promptWidth: number,
    slots: readonly (readonly number[])[],
  ): void {
    const { heads: h, headDim: d, width: w } = this;
    const block = promptWidth * d;
    for (const [buffer, t] of [
      [this.k[layer], kh],
      [this.v[layer], vh],
    ] as const) {
      const src = t.dataSync() as Float32Array;
      buffer?.update((dst) => {
        slots.forEach((targets, r) => {
          for (const s of targets) {
            for (let k = 0; k < h; k++) {
              const from = (r * h + k) * block;
              dst.set(src.subarray(from, from + block), (s * h + k) * w * d);
            }
          }
        });
      });
    }
  }

  /** Writes every slot's new key and value (rows of k2, v2 [capacity, heads·D]) into column positions[s]. */
  writeColumns(layer: number, k2: tf.Tensor2D, v2: tf.Tensor2D, positions: Int32Array): void {
    const { heads: h, headDim: d, width: w } = this;
    for (const [buffer, t] of [
      [this.k[layer], k2],
      [this.v[layer], v2],
    ] as const) {
      const src = t.dataSync() as Float32Array;
      buffer?.update((dst) => {
        for (let s = 0; s < positions.length; s++) {
          const p = positions[s] as number;
          for (let k = 0; k < h; k++) {
            const from = (s * h + k) * d;
            dst.set(src.subarray(from, from + d), ((s * h + k) * w + p) * d);
          }
        }
      });
    }
  }

  /** Frees the buffers. */
  dispose(): void {
    for (const b of [...this.k, ...this.v]) b.dispose();
  }
}

/**
 * The additive bias [cap, heads, 1, W] of one decoding step over full-width slots: key j of slot s
 * is visible iff j ≤ positions[s] (−1e9 beyond).
 */
export function stepBias(positions: Int32Array, heads: number, width: number): Float32Array {
  const cap = positions.length;
  const bias = new Float32Array(cap * heads * width);
  for (let s = 0; s < cap; s++) {
    const base = s * heads * width;
    bias.fill(L.MASKED, base + (positions[s] as number) + 1, base + width);
    for (let k = 1; k < heads; k++) bias.copyWithin(base + k * width, base, base + width);
  }
  return bias;
}
