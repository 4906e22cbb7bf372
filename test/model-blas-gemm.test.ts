/**
 * The addon's split products (native/blas/gemm.c): on two threads a large sgemm runs as
 * independent OpenBLAS calls on chunks of C's rows or columns, and the result must be bitwise
 * that of one whole call on one thread, for every product of the Transformer's learner step (its
 * forward, both gradients of each, transposed operands, beta 0 and 1), ragged edges and batched
 * calls; and both must be the product (a float64 reference, to float32 rounding). Needs the
 * addon: a failure in CI (which builds it), a skip with a reason elsewhere.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { bytesEqual } from "./helpers/model-checks.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasBlas = requireTool(TOOLS.blasAddon);

/** One product: op(A) is m × k, op(B) k × n; `batch` products `stride`d through the arrays. */
interface Case {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  beta: number;
  batch?: number;
}

/** The learner step's products at 64 × 44 rows (C = 128, V = 258): forward, ∂x = dy Wᵀ, ∂W = xᵀ dy. */
const STEP: Case[] = [128 * 3, 128, 128 * 4, 258].flatMap((out) =>
  [128, 512].flatMap((inner) => [
    { transA: false, transB: false, m: 2816, n: out, k: inner, beta: 1 },
    { transA: false, transB: true, m: 2816, n: inner, k: out, beta: 0 },
    { transA: true, transB: false, m: inner, n: out, k: 2816, beta: 0 },
  ]),
);

/** Ragged rows and columns (not whole 16-wide tiles), a short wide C split by columns, a batch. */
const EDGES: Case[] = [
  { transA: false, transB: false, m: 2817, n: 130, k: 129, beta: 0 },
  { transA: true, transB: true, m: 100, n: 1203, k: 700, beta: 1 },
  { transA: false, transB: true, m: 64, n: 3001, k: 333, beta: 0 },
  { transA: false, transB: false, m: 1000, n: 200, k: 100, beta: 0, batch: 3 },
];

describe.skipIf(!hasBlas)("blas gemm", () => {
  let blas: BlasAddon;
  beforeAll(async () => {
    await initBackend("wasm");
    blas = loadBlas({}).addon as BlasAddon;
  });
  // values in [−1, 1) from a hash, not tf.random*, which are per-element JS (minutes at these sizes)
  const values = (n: number, seed: number) => {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const h = Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503);
      data[i] = ((h >>> 8) & 0xffff) / 0x8000 - 1;
    }
    return data;
  };

  /** C for `c` on `threads` threads (the addon's setting restored after). */
  const run = (c: Case, a: Float32Array, b: Float32Array, c0: Float32Array, threads: number) => {
    const before = blas.info().threads;
    const out = Float32Array.from(c0);
    const batch = c.batch ?? 1;
    try {
      blas.setThreads(threads);
      const [sa, sb, sc] = [c.m * c.k, c.k * c.n, c.m * c.n];
      blas.sgemm(c.transA, c.transB, c.m, c.n, c.k, 1, a, 0, sa, b, 0, sb, c.beta, out, 0, sc, batch);
    } finally {
      blas.setThreads(before);
    }
    return out;
  };

  /** Largest |C − (op(A) op(B) + beta C₀)| over a float64 reference, relative to the row norms. */
  const worstError = (c: Case, a: Float32Array, b: Float32Array, c0: Float32Array, got: Float32Array) => {
    let worst = 0;
    const ai = (i: number, p: number) => (c.transA ? (a[p * c.m + i] as number) : (a[i * c.k + p] as number));
    const bi = (p: number, j: number) => (c.transB ? (b[j * c.k + p] as number) : (b[p * c.n + j] as number));
    // every 7th row and column: a float64 product of the whole C takes too long in JS
    for (let i = 0; i < c.m; i += 7) {
      for (let j = 0; j < c.n; j += 7) {
        let s = c.beta * (c0[i * c.n + j] as number);
        let mag = Math.abs(s);
        for (let p = 0; p < c.k; p++) {
          s += ai(i, p) * bi(p, j);
          mag += Math.abs(ai(i, p) * bi(p, j));
        }
        worst = Math.max(worst, Math.abs((got[i * c.n + j] as number) - s) / mag);
      }
    }
    return worst;
  };

  it("blas gemm - the learner step's products on 2 threads are bitwise those of one call on 1 thread", () => {
    for (const [i, c] of [...STEP, ...EDGES].entries()) {
      const batch = c.batch ?? 1;
      const [a, b, c0] = [
        values(batch * c.m * c.k, 3 * i + 1),
        values(batch * c.k * c.n, 3 * i + 2),
        values(batch * c.m * c.n, 3 * i + 3),
      ];
      const one = run(c, a, b, c0, 1);
      const two = run(c, a, b, c0, 2);
      const where = `${c.transA ? "T" : "N"}${c.transB ? "T" : "N"} ${c.m}×${c.n}×${c.k}, beta ${c.beta}`;
      expect(bytesEqual(two, one), where).toBe(true);
      // the first product of the batch against float64: the split computed the product itself
      expect(worstError(c, a, b, c0, two), where).toBeLessThan(1e-5);
      if (batch > 1) {
        const last = (x: Float32Array, size: number) => x.subarray((batch - 1) * size, batch * size);
        const lastCase = { ...c, batch: 1 };
        const [sa, sb, sc] = [c.m * c.k, c.k * c.n, c.m * c.n];
        const err = worstError(lastCase, last(a, sa), last(b, sb), last(c0, sc), last(two, sc));
        expect(err, `${where}, last of the batch`).toBeLessThan(1e-5);
      }
    }
  });

  it("blas gemm - setThreads sets the addon's thread count, read back by info", () => {
    const before = blas.info().threads;
    try {
      blas.setThreads(2);
      expect(blas.info().threads).toBe(2);
      blas.setThreads(1);
      expect(blas.info().threads).toBe(1);
    } finally {
      blas.setThreads(before);
    }
    expect(() => blas.setThreads(0)).toThrow(/thread count >= 1/);
  });
});
