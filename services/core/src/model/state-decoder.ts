/**
 * The row decoder of the recurrent kinds (GRU/LSTM LMs, Seq2Seq), built on their own `step`: the
 * state `step` returns (tensors with the batch on axis 0) is kept per slot in buffers, so rows
 * can join and leave between tokens without recomputing anyone's prefix.
 *
 * A state tensor is either per row ([B, ...rest], e.g. an RNN's h) or per source position of the
 * row ([B, S, ...rest], e.g. the Seq2Seq attention's memory), the latter right-aligned in a
 * buffer of contextLength positions with the rest filled (the attention bias with −1e9), so every
 * decoding step attends over one fixed width whatever the prompt lengths of the other rows (see
 * row-decoder.ts for why widths must not depend on the batch).
 */
import * as tf from "@tensorflow/tfjs";
import type { CausalLM, DecodingState } from "./causal-lm.js";
import { RowBuffer } from "./row-buffer.js";
import { type RowDecoder, readPass } from "./row-decoder.js";

/**
 * Rows per sgemm call in a prefill (blas-kernels.ts's `batchInvariant`). A prefill encodes each
 * distinct prompt once, so it usually carries one or two rows, and the encoder's recurrence runs
 * its product once per prompt position: OpenBLAS took 8.2 µs for [4, 192] @ [192, 576] against
 * 38 µs for the 16-row calls of a decoding step (per row as fast), so 4-row calls made the
 * prefills of 8 prompts ~35% cheaper (Seq2Seq 16.4 → 10.8 ms CPU, GRU 3.6 → 2.2). Any fixed
 * count keeps a prefill's rows independent of each other.
 */
export const PREFILL_ROWS = 4;

/** One tensor of a kind's decoding state. */
export interface StateField {
  /** Shape of one row in the buffer (a source-position field: [contextLength, ...rest]). */
  rowShape: number[];
  /** Axis 0 of a row spans the prompt's positions (right-aligned in the buffer). */
  perPosition: boolean;
  /** Value of buffer cells no row wrote. */
  fill: number;
}

/** How a kind's `step` state maps onto buffers. */
export interface StateLayout {
  fields: readonly StateField[];
  /** The state's tensors in field order, each [B, ...] (a per-position one [B, S, ...rest]). */
  toTensors(state: DecodingState): tf.Tensor[];
  /** A state from tensors in field order (views of the buffers). */
  fromTensors(tensors: tf.Tensor[]): DecodingState;
  /** See RowDecoder.prefillKey. */
  prefillKey(length: number): number;
}

/** Slots of a recurrent model's decoding state (see the module doc). */
export class StateDecoder implements RowDecoder {
  private readonly buffers: RowBuffer[];

  constructor(
    private readonly model: CausalLM,
    private readonly layout: StateLayout,
    capacity: number,
  ) {
    this.buffers = layout.fields.map((f) => new RowBuffer(f.rowShape, capacity, f.fill));
  }

  get capacity(): number {
    return this.buffers[0]?.capacity ?? 0;
  }

  resize(capacity: number, keep: readonly number[]): void {
    for (const b of this.buffers) b.resize(capacity, keep);
  }

  prefillKey(length: number): number {
    return this.layout.prefillKey(length);
  }

  /** Left-pads the prompts to the longest (padding masked: exact), runs `step` from no state. */
  prefill(prompts: readonly (readonly number[])[], slots: readonly (readonly number[])[]): Float32Array {
    const n = prompts.length;
    const width = Math.max(...prompts.map((p) => p.length));
    const tok = new Int32Array(n * width);
    const mask = new Float32Array(n * width);
    prompts.forEach((p, r) => {
      tok.set(p, r * width + width - p.length);
      mask.fill(1, r * width + width - p.length, (r + 1) * width);
    });
    return readPass(() => {
      const out = this.model.step(
        tf.tensor2d(tok, [n, width], "int32"),
        tf.zeros([n, width], "int32"),
        tf.tensor2d(mask, [n, width]),
        null,
      );
      this.layout.toTensors(out.cache).forEach((t, i) => {
        this.copyPrompts(this.buffers[i] as RowBuffer, this.layout.fields[i] as StateField, t, slots);
      });
      const v = out.logits.shape[2];
      return out.logits.slice([0, width - 1, 0], [n, 1, v]); // [n·V]
    }, PREFILL_ROWS);
  }

  step(tokens: Int32Array, positions: Int32Array): Float32Array {
    const cap = tokens.length;
    return readPass(() => {
      const past = this.layout.fromTensors(this.buffers.map((b) => b.tensor()));
      const out = this.model.step(
        tf.tensor2d(tokens, [cap, 1], "int32"),
        tf.tensor2d(positions, [cap, 1], "int32"),
        tf.ones([cap, 1]),
        past,
      );
      // A step changes only the per-row state (the source positions are fixed once encoded).
      this.layout.toTensors(out.cache).forEach((t, i) => {
        if ((this.layout.fields[i] as StateField).perPosition) return;
        const data = t.dataSync() as Float32Array;
        this.buffers[i]?.update((dst) => dst.set(data));
      });
      return out.logits; // [cap·V]
    });
  }

  dispose(): void {
    for (const b of this.buffers) b.dispose();
  }

  /** Copies prompt r's row of `t` into its slots (a per-position field right-aligned, the rest `fill`). */
  private copyPrompts(
    buffer: RowBuffer,
    field: StateField,
    t: tf.Tensor,
    slots: readonly (readonly number[])[],
  ): void {
    const src = t.dataSync() as Float32Array;
    const size = buffer.rowSize;
    const from = src.length / slots.length; // floats of one prompt's row in `t`
    buffer.update((dst) => {
      slots.forEach((targets, r) => {
        const row = src.subarray(r * from, (r + 1) * from);
        for (const s of targets) {
          if (field.perPosition) dst.fill(field.fill, s * size, (s + 1) * size - from);
          dst.set(row, (s + 1) * size - from);
        }
      });
    });
  }
}
