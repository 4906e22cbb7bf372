/**
 * The addon's row segment sum (native/blas/segment-sum.c, segment-kernels.ts), the embeddings'
 * gradient: `UnsortedSegmentSum` on the BLAS kernels equals the JavaScript kernel of the wasm
 * workarounds bit for bit, on 1 and 2 threads, for the learner step's token and position
 * embeddings, a width off the 16-column chunks, rows of rank 2 and ids outside the segments.
 * Needs the addon: a failure in CI (which builds it), a skip with a reason elsewhere.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { setWasmMatMul, type WasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { bytesEqual } from "./helpers/model-checks.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasBlas = requireTool(TOOLS.blasAddon);

describe.skipIf(!hasBlas)("blas segment sum", () => {
  let blas: BlasAddon;
  let initial: WasmMatMul;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
    blas = loadBlas({}).addon as BlasAddon;
  });
  afterAll(() => setWasmMatMul(initial, blas));

  /** Values of every sign over six decades, from a hash (tf.random* is per-element JS). */
  const values = (shape: number[], seed: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const h = Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503);
      data[i] = (((h >>> 8) & 0xffff) / 0x8000 - 1) * 10 ** ((h & 7) - 3);
    }
    return tf.tensor(data, shape);
  };

  /** The sum's bytes on the given kernels and thread count. */
  const run = (kind: WasmMatMul, threads: number, x: tf.Tensor, ids: tf.Tensor1D, segments: number) => {
    const before = blas.info().threads;
    setWasmMatMul(kind, blas);
    blas.setThreads(threads);
    try {
      return tf.tidy(() => tf.unsortedSegmentSum(x, ids, segments).dataSync() as Float32Array);
    } finally {
      blas.setThreads(before);
    }
  };

  it("blas segment sum - equals the JavaScript kernel bitwise on 1 and 2 threads", () => {
    const n = 64 * 44;
    const cases: [string, number[], number[], number][] = [
      ["token rows", [n, 128], Array.from({ length: n }, (_, i) => (i * 37 + (i >> 3)) % 258), 258],
      ["position rows", [n, 128], Array.from({ length: n }, (_, i) => i % 44), 64],
      ["width 37, ids outside", [1001, 37], Array.from({ length: 1001 }, (_, i) => (i % 13) - 2), 9],
      ["rows of rank 2", [300, 3, 5], Array.from({ length: 300 }, (_, i) => i % 7), 7],
    ];
    for (const [name, shape, ids, segments] of cases) {
      const x = values(shape, shape[0] as number);
      const idx = tf.tensor1d(ids, "int32");
      const reference = run("wasm", 1, x, idx, segments);
      for (const threads of [1, 2]) {
        const got = run("blas", threads, x, idx, segments);
        expect(got.length, name).toBe(reference.length);
        expect(bytesEqual(got, reference), `${name}, ${threads} thread(s)`).toBe(true);
      }
      // the sum itself: segment 0 (or 1) by hand in float32
      const xs = x.dataSync();
      const width = xs.length / ids.length;
      const seg = ids.includes(0) ? 0 : 1;
      const want = new Float32Array(width);
      ids.forEach((s, i) => {
        if (s === seg)
          for (let j = 0; j < width; j++)
            want[j] = Math.fround((want[j] as number) + (xs[i * width + j] as number));
      });
      expect(bytesEqual(reference.subarray(seg * width, (seg + 1) * width), want), name).toBe(true);
      tf.dispose([x, idx]);
    }
  });
});
