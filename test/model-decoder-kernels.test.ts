/**
 * The fused decoder kernels (native/blas/decoder-attention.c through fused-kernels.ts): the attention
 * against the same maths in tfjs ops, and the property the batched sampler relies on (a row's
 * context does not depend on the rows batched with it nor on how much padding precedes its
 * memory); the inference tanh against tf.tanh.
 * Needs the addon: a failure in CI (which builds it), a skip with a reason elsewhere.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { FUSED, runFused } from "../services/core/src/model/fused-kernels.js";
import { MASKED } from "../services/core/src/model/layers.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { RECURRENT_OPS } from "../services/core/src/model/recurrent-ops.js";
import { setWasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { scaledError } from "./helpers/model-checks.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasBlas = requireTool(TOOLS.blasAddon);

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) =>
  Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - (b[i] as number))), 0);

/** Inputs of one attention call: B rows, J queries, width S, hidden H; row r's first pads[r] positions padded. */
function inputs(b: number, j: number, s: number, h: number, pads: number[], seed: number) {
  const flags = Array.from({ length: b * s }, (_, k) =>
    k % s < (pads[Math.floor(k / s)] ?? 0) ? MASKED : 0,
  );
  const bias = tf.tensor3d(flags, [b, 1, s]);
  return {
    q: tf.randomNormal([b, j, h], 0, 1, "float32", seed),
    keys: tf.randomNormal([b, s, h], 0, 1, "float32", seed + 1),
    values: tf.randomNormal([b, s, h], 0, 1, "float32", seed + 2),
    bias,
  };
}

describe.skipIf(!hasBlas)("decoder kernels", () => {
  let initial: ReturnType<typeof wasmMatMulKind>;
  let blas: BlasAddon;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
    blas = loadBlas({}).addon as BlasAddon;
    setWasmMatMul("blas", blas);
  });
  afterAll(() => setWasmMatMul(initial, blas));

  const fused = (x: tf.NamedTensorMap) => runFused<tf.Tensor3D>(FUSED.attend, x);

  it("decoder kernels - attention equals softmax(q kᵀ + bias) v computed in tfjs ops, with padding and a row of padding only", () => {
    // [B, J, S, H, padded positions per row]; the last case's first row is padding only
    for (const [b, j, s, h, pads] of [
      [3, 1, 7, 20, [0, 2, 4]],
      [2, 4, 5, 33, [0, 2]],
      [1, 2, 64, 192, [0]],
      [2, 1, 4, 8, [4, 1]],
    ] as const) {
      const x = inputs(b, j, s, h, [...pads], b + j);
      const got = fused(x);
      const want = tf.matMul(tf.softmax(tf.add(tf.matMul(x.q, x.keys, false, true), x.bias)), x.values);
      expect(got.shape).toEqual([b, j, h]);
      expect(scaledError(got.dataSync(), want.dataSync()), `${b}×${j}×${s}×${h}`).toBeLessThan(1e-5);
      tf.dispose([got, want, ...Object.values(x)]);
    }
  });

  it("decoder kernels - attention a row's context is bit-identical alone, batched, and behind extra padding", () => {
    const x = inputs(4, 1, 9, 40, [0, 3, 1, 5], 11);
    const all = fused(x).arraySync();
    const row = (t: tf.Tensor, r: number) => tf.slice(t, [r, 0, 0], [1, -1, -1]);
    for (let r = 0; r < 4; r++) {
      const alone = fused({
        q: row(x.q, r),
        keys: row(x.keys, r),
        values: row(x.values, r),
        bias: row(x.bias, r),
      });
      expect(alone.arraySync()[0], `row ${r}`).toEqual(all[r]);
      // the same memory right-aligned behind 6 more padded positions (the decoder's buffer layout)
      const pad = (t: tf.Tensor) => tf.concat([tf.zeros([1, 6, 40]), t], 1);
      const wide = fused({
        q: row(x.q, r),
        keys: pad(row(x.keys, r)),
        values: pad(row(x.values, r)),
        bias: tf.concat([tf.fill([1, 1, 6], MASKED), row(x.bias, r)], 2),
      });
      expect(wide.arraySync()[0], `row ${r} padded`).toEqual(all[r]);
    }
    tf.dispose(Object.values(x));
  });

  it("decoder kernels - tanh equals tf.tanh, saturating far out, and the inference ops use it", () => {
    const values = Array.from({ length: 4001 }, (_, i) => (i - 2000) / 100); // −20 … 20
    values.push(-100, 100, 1e-8, -0, 0);
    const x = tf.tensor1d(values);
    const got = runFused<tf.Tensor1D>(FUSED.tanh, { x });
    const want = tf.tanh(x);
    expect(maxAbs(got.dataSync(), want.dataSync())).toBeLessThan(1e-6);
    const viaOps = RECURRENT_OPS.inference.tanh(x);
    expect(Array.from(viaOps.dataSync())).toEqual(Array.from(got.dataSync()));
    tf.dispose([x, got, want, viaOps]);
  });

  it("decoder kernels - the addon rejects tensors outside the heap and bad sizes instead of touching other memory", () => {
    const heap = new Float32Array(16);
    expect(() => blas.attend(heap, 0, 0, 0, 0, 13, 1, 1, 2, 4)).toThrow(/out of range/);
    expect(() => blas.attend(heap, 0, 0, 0, 0, 0, 0, 1, 2, 4)).toThrow(RangeError);
    expect(() => blas.attend(heap, -1, 0, 0, 0, 0, 1, 1, 1, 1)).toThrow(RangeError);
    expect(() => blas.tanh(heap, 0, 8, 9)).toThrow(/out of range/);
  });
});
