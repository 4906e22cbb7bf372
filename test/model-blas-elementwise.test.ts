/**
 * The addon's Add, Sub and Multiply (elementwise-kernels.ts, native/blas/elementwise.c) against
 * tfjs-wasm's own kernels: bitwise equal outputs for every broadcast pattern they take, on one
 * and two OpenBLAS threads, and the stock kernel kept for what they do not take. Needs the addon:
 * a failure in CI (which builds it), a skip with a reason elsewhere.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { broadcastMode } from "../services/core/src/model/elementwise-kernels.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { setWasmMatMul, type WasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { bytesEqual } from "./helpers/model-checks.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasBlas = requireTool(TOOLS.blasAddon);

describe.skipIf(!hasBlas)("blas elementwise", () => {
  let blas: BlasAddon;
  let initial: WasmMatMul;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
    blas = loadBlas({}).addon as BlasAddon;
  });
  afterAll(() => setWasmMatMul(initial, blas));

  /** The op's output bytes on the given kernels and thread count. */
  const run = (kind: WasmMatMul, threads: number, f: () => tf.Tensor): Float32Array => {
    const before = blas.info().threads;
    setWasmMatMul(kind, blas);
    blas.setThreads(threads);
    try {
      return tf.tidy(() => f().dataSync() as Float32Array);
    } finally {
      blas.setThreads(before);
    }
  };
  // values of every sign and magnitude (e^-60 to e^40), with zeros (−0 + 0, 0 × −x); a hash, not
  // tf.random*, which are per-element JS and would make this test minutes long on a busy machine
  const values = (shape: number[], seed: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const h = Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503);
      const u = ((h >>> 8) & 0xffff) / 0x10000; // [0, 1)
      const sign = (h & 3) - 1.5; // −1.5, −0.5, 0.5, 1.5
      data[i] = (h & 28) === 0 ? 0 : Math.round(sign) * Math.exp(100 * u - 60);
    }
    return tf.tensor(data, shape);
  };

  it("blas elementwise - Add, Sub and Multiply equal tfjs's kernels bitwise for every pattern, on 1 and 2 threads", () => {
    const n = 64 * 45;
    const patterns: [string, number[], number[]][] = [
      ["same shape", [n, 128], [n, 128]],
      ["a row [C]", [n, 128], [128]],
      ["a row on the left", [1, 128], [n, 128]],
      ["a column [N, 1]", [n, 128], [n, 1]],
      ["a column on the left", [n, 1], [n, 128]],
      ["a scalar", [n, 128], []],
      ["a scalar on the left", [1], [n, 128]],
      ["rank 4, a row over two axes", [16, 4, 45, 45], [45, 45]],
      ["rank 4, a spread column", [16, 4, 45, 45], [16, 4, 1, 1]],
      ["length off the 4,096 blocks", [50_003], [50_003]],
    ];
    const ops: [string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor][] = [
      ["add", tf.add],
      ["sub", tf.sub],
      ["mul", tf.mul],
    ];
    const kinds: number[] = [];
    for (const [name, sa, sb] of patterns) {
      const out = tf.backend_util.assertAndGetBroadcastShape(sa, sb);
      kinds.push(broadcastMode(sa, out)?.[0] ?? -1, broadcastMode(sb, out)?.[0] ?? -1);
      const [a, b] = [values(sa, 3), values(sb, 7)];
      for (const [op, f] of ops) {
        const reference = run("stock", 1, () => f(a, b));
        for (const threads of [1, 2]) {
          const got = run("blas", threads, () => f(a, b));
          expect(bytesEqual(got, reference), `${op}, ${name}, ${threads} thread(s)`).toBe(true);
        }
      }
      tf.dispose([a, b]);
    }
    // every mode of elementwise.c was exercised: full, row, spread, scalar
    expect(new Set(kinds)).toEqual(new Set([0, 1, 2, 3]));
  }, 120_000);

  it("blas elementwise - patterns it does not take, int32 and small tensors stay with the stock kernel", () => {
    expect(broadcastMode([64, 1], [64, 128])).toEqual([2, 128]);
    expect(broadcastMode([128], [64, 128])).toEqual([1, 128]);
    expect(broadcastMode([1, 1], [64, 128])).toEqual([3, 1]);
    // [1, C] against [N, 1]: both broadcast; a short row; a middle axis
    expect(broadcastMode([1, 128], [64, 128])).toEqual([1, 128]);
    expect(broadcastMode([8], [4096, 8])).toBeNull();
    expect(broadcastMode([64, 1, 8], [64, 4, 8])).toBeNull();
    const outer = () => tf.add(values([1, 4096], 1), values([64, 1], 2));
    expect(bytesEqual(run("blas", 2, outer), run("stock", 1, outer))).toBe(true);
    const ints = run("blas", 2, () => tf.add(tf.range(0, 10_000, 1, "int32"), tf.scalar(3, "int32")));
    expect(ints[9_999]).toBe(10_002);
  });

  it("blas elementwise - the addon rejects bad modes and arrays too small for them", () => {
    const small = new Float32Array(8);
    const big = new Float32Array(64);
    expect(() => blas.elementwise(0, big, 0, 0, 1, small, 0, 0, 1, big, 0, 64)).toThrow(/out of range/);
    expect(() => blas.elementwise(0, big, 0, 1, 8, small, 0, 1, 8, big, 0, 64)).toThrow(
      /one operand must be full/,
    );
    expect(() => blas.elementwise(0, big, 0, 0, 1, small, 0, 1, 7, big, 0, 64)).toThrow(/periods divide n/);
    expect(() => blas.elementwise(5, big, 0, 0, 1, big, 0, 0, 1, big, 0, 64)).toThrow(RangeError);
    blas.elementwise(2, big.fill(3), 0, 0, 1, small.fill(2), 0, 1, 8, big, 0, 64);
    expect(big[63]).toBe(6);
  });
});
