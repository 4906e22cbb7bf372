/**
 * Shared pieces of the model tests (Transformer, RNN, Seq2Seq, sampler): one sampling setup for
 * seeded-generation checks, the float64 helpers the hand-written reference models use, the
 * scale-relative error of fused ops against their references, and the finite-difference check.
 */
import * as tf from "@tensorflow/tfjs";
import { expect } from "vitest";
import type { SamplingParams } from "../../services/core/src/model/sampling.js";

/** Seeded sampling at temperature 1 with no filters and no EOS stop: every row runs 8 tokens. */
export const TEST_SAMPLING: SamplingParams = {
  maxNewTokens: 8,
  temperature: 1,
  topK: 0,
  topP: 1,
  seed: 3,
  stopAtEos: false,
};

/**
 * A fixed next-token batch over the byte vocabulary: inputs x [b, t], targets y [b, t] and a loss
 * mask [b, t] that drops the last `maskedTail` positions of every row but the first, so gradient
 * checks cover padded rows. Deterministic, so two code paths see the same batch.
 */
export function syntheticLmBatch(
  b: number,
  t: number,
  maskedTail: number,
): { x: tf.Tensor2D; y: tf.Tensor2D; mask: tf.Tensor2D } {
  const ids = Array.from({ length: b * t }, (_, i) => (i * 37 + 11) % 258);
  return {
    x: tf.tensor2d(ids, [b, t], "int32"),
    y: tf.tensor2d(
      ids.map((v) => (v * 5 + 3) % 258),
      [b, t],
      "int32",
    ),
    mask: tf.tensor2d(
      ids.map((_, i) => (i % t < t - maskedTail || i < t ? 1 : 0)),
      [b, t],
    ),
  };
}

/** σ(x) in float64, for reference cell equations. */
export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** max_i |a_i − b_i|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

/** max_i |a_i − b_i| / max_i |b_i|: the error relative to the tensor's scale. */
export function scaledError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs((a[i] as number) - (b[i] as number)));
    den = Math.max(den, Math.abs(b[i] as number));
  }
  return num / Math.max(den, 1e-30);
}

/**
 * Central differences of `loss` (float64 arithmetic on the float32 loss, step `eps`) on the
 * first, middle and last entry of every variable, compared with `grads` (name → gradient):
 * |fd − g| < 2e-3 + 2e-2·|fd|. Each variable is restored after it is probed.
 */
export function expectFiniteDifferenceGradients(
  vars: readonly tf.Variable[],
  grads: tf.NamedTensorMap,
  loss: () => tf.Scalar,
  eps = 1e-2,
): void {
  for (const v of vars) {
    const g = (grads[v.name] as tf.Tensor).dataSync();
    const base = Float32Array.from(v.dataSync() as Float32Array);
    for (const k of [0, Math.floor(base.length / 2), base.length - 1]) {
      const at = (delta: number) => {
        const d = Float32Array.from(base);
        d[k] = (d[k] as number) + delta;
        v.assign(tf.tensor(d, v.shape));
        return tf.tidy(() => loss().dataSync()[0] as number);
      };
      const fd = (at(eps) - at(-eps)) / (2 * eps);
      v.assign(tf.tensor(base, v.shape));
      expect(Math.abs(fd - (g[k] as number))).toBeLessThan(2e-3 + 2e-2 * Math.abs(fd));
    }
  }
}

/** True when two float arrays hold the same bytes (bitwise equal, NaNs and signed zeros included). */
export function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return Buffer.compare(bytes(a), bytes(b)) === 0;
}
