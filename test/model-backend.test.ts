import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../services/core/src/errors.js";
import { initBackend, startBackend } from "../services/core/src/model/backend.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";

function maxRelDiff(a: tf.Tensor, b: tf.Tensor): number {
  const x = a.dataSync();
  const y = b.dataSync();
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    num = Math.max(num, Math.abs((x[i] as number) - (y[i] as number)));
    den = Math.max(den, Math.abs(y[i] as number));
  }
  return num / Math.max(den, 1e-12);
}

describe("backend", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("backend - initBackend is idempotent and falls back from tensorflow to wasm", async () => {
    // With the OpenBLAS addon built, the wasm backend's matmuls run on it and the name says so.
    const wasm = loadBlas().addon !== null ? "wasm+blas" : "wasm";
    const first = initBackend("wasm");
    expect(initBackend()).toBe(first);
    expect(await first).toBe(wasm);
    // tfjs-node cannot be installed here, so asking for it lands on the next backend.
    expect(await initBackend("tensorflow")).toBe(wasm);
    expect(await initBackend("wasm")).toBe(wasm);
    expect(await startBackend("wasm")).toBe(wasm);
    await expect(startBackend("tensorflow")).rejects.toThrow(/could not be started/);
    expect(() => initBackend("gpu" as "wasm")).toThrow(ConfigError);
  });

  it("backend - wasm oneHot with a float dtype is exact", () => {
    const v = tf.tidy(() => tf.oneHot(tf.tensor1d([1, 0, 2], "int32"), 3, 1, 0, "float32").arraySync());
    expect(v).toEqual([
      [0, 1, 0],
      [1, 0, 0],
      [0, 0, 1],
    ]);
    const w = tf.tidy(() => tf.oneHot(tf.tensor1d([2], "int32"), 4, 5, -1).arraySync());
    expect(w).toEqual([[-1, -1, 5, -1]]);
  });

  it("backend - gather gradient works on wasm (UnsortedSegmentSum)", () => {
    const table = tf.tensor2d([1, 2, 3, 4, 5, 6], [3, 2]);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([2, 0, 2], "int32"))))(table);
    expect(g.arraySync()).toEqual([
      [1, 1],
      [0, 0],
      [2, 2],
    ]);
  });

  it("backend - wasm matmul matches the cpu backend for batched, transposed and broadcast operands", async () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[6, 16, 8], [6, 8, 12], false, false],
      [[2, 3, 16, 8], [2, 3, 8, 12], false, false],
      [[6, 8, 16], [6, 12, 8], true, true],
      [[16, 8], [12, 8], false, true],
      [[8, 16], [8, 12], true, false],
      [[6, 16, 8], [8, 12], false, false],
      [[1, 16, 8], [5, 8, 12], false, false],
      [[4, 2, 8], [4, 8, 3], false, false],
      [[5, 2, 8], [8, 3], false, false],
      [[2, 3, 16, 8], [1, 8, 12], false, false],
    ];
    const inputs = cases.map(([sa, sb]) => [
      tf.randomNormal(sa, 0, 1, "float32", 1),
      tf.randomNormal(sb, 0, 1, "float32", 2),
    ]);
    const values = inputs.map(([a, b]) => [(a as tf.Tensor).arraySync(), (b as tf.Tensor).arraySync()]);
    const wasm = cases.map(([, , ta, tb], i) =>
      tf.matMul(inputs[i]?.[0] as tf.Tensor, inputs[i]?.[1] as tf.Tensor, ta, tb),
    );
    const wasmValues = wasm.map((t) => t.arraySync());
    await tf.setBackend("cpu");
    try {
      cases.forEach(([, , ta, tb], i) => {
        const [va, vb] = values[i] as [number[], number[]];
        const ref = tf.matMul(tf.tensor(va), tf.tensor(vb), ta, tb);
        expect(maxRelDiff(tf.tensor(wasmValues[i] as number[]), ref)).toBeLessThan(1e-5);
        expect((wasm[i] as tf.Tensor).shape).toEqual(ref.shape);
      });
    } finally {
      await tf.setBackend("wasm");
    }
  });
});
