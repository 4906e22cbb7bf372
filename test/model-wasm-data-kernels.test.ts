/**
 * The wasm data-movement kernels (wasm-data-kernels.ts) against tfjs's stock ones, switched in one
 * process: the same inputs through both give identical results (they only move values), across
 * ranks, axes, partial extents and dtypes; and a shared-buffer Identity keeps each tensor alive
 * for exactly as long as some handle to it is.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { setWasmDataKernels } from "../services/core/src/model/wasm-data-kernels.js";

/** The values of `f()` with this file's kernels and with the stock ones. */
function both(f: () => tf.Tensor | tf.Tensor[]): [unknown, unknown] {
  const run = () => {
    const out = f();
    const list = Array.isArray(out) ? out : [out];
    const values = list.map((t) => ({ shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync()) }));
    tf.dispose(list);
    return values;
  };
  const ours = run();
  setWasmDataKernels("stock");
  try {
    return [ours, run()];
  } finally {
    setWasmDataKernels("views");
  }
}

describe("wasm data kernels", () => {
  let x4: tf.Tensor;
  let ints: tf.Tensor;

  beforeAll(async () => {
    await initBackend("wasm");
    x4 = tf.randomNormal([3, 4, 5, 6], 0, 1, "float32", 3);
    ints = tf.tidy(() => tf.range(0, 3 * 7 * 5, 1, "int32").reshape([3, 7, 5]));
    expect(setWasmDataKernels("views")).toEqual(["Identity", "Slice", "SplitV", "Unpack", "GatherV2"]);
  });
  afterAll(() => tf.dispose([x4, ints]));

  it("wasm data kernels - slices of every rank, partial or whole on each axis, equal the stock kernel", () => {
    const cases: [tf.Tensor, number[], number[]][] = [
      [x4, [1, 0, 0, 0], [2, 4, 5, 6]], // contiguous block of axis 0
      [x4, [0, 1, 2, 3], [3, 2, 3, 3]], // partial everywhere
      [x4, [2, 3, 4, 5], [1, 1, 1, 1]], // one element
      [x4, [0, 0, 0, 2], [3, 4, 5, 0]], // empty
      [x4.reshape([6, 2, 5, 2, 3]), [1, 0, 1, 0, 1], [4, 2, 3, 2, 2]], // rank 5
      [ints, [0, 2, 1], [3, 4, 3]], // int32
      [ints.reshape([105]), [10], [50]], // rank 1
    ];
    for (const [x, begin, extent] of cases) {
      const [ours, stock] = both(() => tf.slice(x, begin, extent));
      expect(ours, `${x.shape} ${begin} ${extent}`).toEqual(stock);
    }
    const bools = tf.tensor2d([1, 0, 0, 1, 1, 0], [2, 3], "bool");
    const [ours, stock] = both(() => tf.slice(bools, [0, 1], [2, 2]));
    expect(ours).toEqual(stock);
    bools.dispose();
  });

  it("wasm data kernels - split and unstack along every axis equal the stock kernels", () => {
    for (const axis of [0, 1, 2, 3, -1]) {
      const dim = x4.shape.at(axis) as number;
      const [ours, stock] = both(() => tf.split(x4, [1, dim - 1], axis));
      expect(ours, `split axis ${axis}`).toEqual(stock);
      const [u, us] = both(() => tf.unstack(x4, axis));
      expect(u, `unstack axis ${axis}`).toEqual(us);
    }
    const [ours, stock] = both(() => tf.split(ints, 7, 1));
    expect(ours).toEqual(stock);
  });

  it("wasm data kernels - gather of rows, columns and single values equals the stock kernel and rejects bad indices", () => {
    const ids = tf.tensor1d([4, 0, 2, 2, 3], "int32");
    const ids2 = tf.tensor2d([1, 0, 3, 3], [2, 2], "int32");
    for (const axis of [0, 1, 2, 3]) {
      const dim = x4.shape[axis] as number;
      const [ours, stock] = both(() => tf.gather(x4, tf.tensor1d([dim - 1, 0, 2, 2, 1], "int32"), axis));
      expect(ours, `axis ${axis}`).toEqual(stock);
    }
    const [m, ms] = both(() => tf.gather(ints, ids2, 1));
    expect(m).toEqual(ms);
    const [flat, flats] = both(() => tf.gather(ints.reshape([105]), ids));
    expect(flat).toEqual(flats);
    expect(() => tf.gather(x4, tf.tensor1d([0, 3], "int32"), 0)).toThrow(/index value 3 is not in \[0, 2\]/);
    tf.dispose([ids, ids2]);
  });

  it("wasm data kernels - a clone shares its buffer and lives until its last handle is disposed", () => {
    const buffers = () => tf.memory().numDataBuffers;
    const before = buffers();
    const a = tf.tensor1d([1, 2, 3]);
    const b = tf.clone(a);
    expect(buffers() - before).toBe(1); // one buffer for both
    a.dispose();
    expect(buffers() - before).toBe(1);
    expect(Array.from(b.dataSync())).toEqual([1, 2, 3]);
    b.dispose();
    expect(buffers()).toBe(before);
    // a gradient through a clone (autodiff clones the tensors it saves) is unchanged
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.clone(t), t)))(tf.tensor1d([1, -2]));
    expect(Array.from(g.dataSync())).toEqual([2, -4]);
    g.dispose();
  });
});
