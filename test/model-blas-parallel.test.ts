/**
 * The addon's LayerNorm, softmax and Adam kernels split over the OpenBLAS threads
 * (native/blas/layer-norm.c, softmax.c, fused.c): on one and two threads they give bitwise the
 * same floats, and LayerNorm's are exactly those of a transcription of its arithmetic (float32 via
 * Math.fround, the double sums in JS numbers), so the split changed no result. Needs the addon:
 * a failure in CI (which builds it), a skip with a reason elsewhere.
 */
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { bytesEqual } from "./helpers/model-checks.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasBlas = requireTool(TOOLS.blasAddon);
const f = Math.fround;

/** Σ a[j] over four double accumulators, as layer-norm.c's row_sum (and its other row sums). */
function sum4(n: number, term: (j: number) => number): number {
  const s = [0, 0, 0, 0];
  let j = 0;
  for (; j + 4 <= n; j += 4) for (let k = 0; k < 4; k++) s[k] = (s[k] as number) + term(j + k);
  for (; j < n; j++) s[0] = (s[0] as number) + term(j);
  return (s[0] as number) + (s[1] as number) + ((s[2] as number) + (s[3] as number));
}

/** layer-norm.c's forward, operation by operation. */
function layerNormReference(
  x: Float32Array,
  g: Float32Array,
  b: Float32Array,
  rows: number,
  cols: number,
  eps: number,
) {
  const [y, xhat, rstd] = [
    new Float32Array(rows * cols),
    new Float32Array(rows * cols),
    new Float32Array(rows),
  ];
  for (let r = 0; r < rows; r++) {
    const at = (j: number) => x[r * cols + j] as number;
    const mu = sum4(cols, at) / cols;
    const v = sum4(cols, (j) => (at(j) - mu) * (at(j) - mu)) / cols;
    const rs = f(1 / Math.sqrt(v + eps));
    const muf = f(mu);
    rstd[r] = rs;
    for (let j = 0; j < cols; j++) {
      const xh = f(f(at(j) - muf) * rs);
      xhat[r * cols + j] = xh;
      y[r * cols + j] = f(f(xh * (g[j] as number)) + (b[j] as number));
    }
  }
  return { y, xhat, rstd };
}

/** layer-norm.c's backward, operation by operation. */
function layerNormGradReference(
  dy: Float32Array,
  xhat: Float32Array,
  rstd: Float32Array,
  g: Float32Array,
  rows: number,
  cols: number,
) {
  const [dx, dg, db] = [new Float32Array(rows * cols), new Float32Array(cols), new Float32Array(cols)];
  const [sdg, sdb] = [new Float64Array(cols), new Float64Array(cols)];
  for (let r = 0; r < rows; r++) {
    const d = (j: number) => dy[r * cols + j] as number;
    const xh = (j: number) => xhat[r * cols + j] as number;
    const gx = (j: number) => f(d(j) * (g[j] as number));
    for (let j = 0; j < cols; j++) {
      sdg[j] = (sdg[j] as number) + f(d(j) * xh(j));
      sdb[j] = (sdb[j] as number) + d(j);
    }
    const mean1 = f(sum4(cols, gx) / cols);
    const mean2 = f(sum4(cols, (j) => f(gx(j) * xh(j))) / cols);
    const rs = rstd[r] as number;
    for (let j = 0; j < cols; j++) dx[r * cols + j] = f(rs * f(f(gx(j) - mean1) - f(xh(j) * mean2)));
  }
  for (let j = 0; j < cols; j++) [dg[j], db[j]] = [sdg[j] as number, sdb[j] as number];
  return { dx, dg, db };
}

describe.skipIf(!hasBlas)("blas parallel", () => {
  let blas: BlasAddon;
  beforeAll(async () => {
    await initBackend("wasm");
    blas = loadBlas({}).addon as BlasAddon;
  });
  const normal = (n: number, seed: number, sd = 1) =>
    Float32Array.from(tf.tidy(() => tf.randomNormal([n], 0, sd, "float32", seed).dataSync()));
  /** `f` on each thread count, the OpenBLAS setting restored after. */
  const onThreads = <T>(run: () => T): [T, T] => {
    const before = blas.info().threads;
    try {
      return [1, 2].map((t) => {
        blas.setThreads(t);
        return run();
      }) as [T, T];
    } finally {
      blas.setThreads(before);
    }
  };

  it("blas parallel - LayerNorm forward and backward equal their arithmetic exactly on 1 and 2 threads", () => {
    // the learner step's [64 × 45, 128] rows, and an odd shape off the 4-wide unrolling
    for (const [rows, cols] of [
      [64 * 45, 128],
      [1001, 37],
    ] as const) {
      const n = rows * cols;
      const x = normal(n, 1, 4);
      const [g, b, dy] = [normal(cols, 2), normal(cols, 3), normal(n, 4)];
      const ref = layerNormReference(x, g, b, rows, cols, 1e-5);
      const grad = layerNormGradReference(dy, ref.xhat, ref.rstd, g, rows, cols);
      const results = onThreads(() => {
        const [y, xhat, rstd] = [new Float32Array(n), new Float32Array(n), new Float32Array(rows)];
        blas.layerNorm(x, 0, g, 0, b, 0, y, 0, xhat, 0, rstd, 0, rows, cols, 1e-5);
        const [dx, dg, db] = [new Float32Array(n), new Float32Array(cols), new Float32Array(cols)];
        blas.layerNormGrad(dy, 0, ref.xhat, 0, ref.rstd, 0, g, 0, dx, 0, dg, 0, db, 0, rows, cols);
        return { y, xhat, rstd, dx, dg, db };
      });
      for (const [t, got] of results.entries()) {
        const where = `${rows}×${cols}, ${t + 1} thread(s)`;
        expect(bytesEqual(got.y, ref.y), `y, ${where}`).toBe(true);
        expect(bytesEqual(got.xhat, ref.xhat), `x̂, ${where}`).toBe(true);
        expect(bytesEqual(got.rstd, ref.rstd), `1/σ, ${where}`).toBe(true);
        expect(bytesEqual(got.dx, grad.dx), `dx, ${where}`).toBe(true);
        expect(bytesEqual(got.dg, grad.dg), `dγ, ${where}`).toBe(true);
        expect(bytesEqual(got.db, grad.db), `dβ, ${where}`).toBe(true);
      }
    }
  });

  it("blas parallel - softmax with its log-normaliser is bitwise the same on 1 and 2 threads", () => {
    const [rows, cols] = [64 * 45, 258];
    const z = normal(rows * cols, 5, 6);
    const [one, two] = onThreads(() => {
      const [p, lse] = [new Float32Array(rows * cols), new Float32Array(rows)];
      blas.softmaxLse(z, 0, p, 0, lse, 0, rows, cols);
      return { p, lse };
    });
    expect(bytesEqual(two.p as Float32Array, one.p as Float32Array)).toBe(true);
    expect(bytesEqual(two.lse as Float32Array, one.lse as Float32Array)).toBe(true);
    // a real distribution: the last row sums to 1
    const last = (one.p as Float32Array).subarray((rows - 1) * cols);
    expect(last.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
  });

  it("blas parallel - Adam's update is bitwise the same on 1 and 2 threads", () => {
    // the MLP weight's 65,536 elements and a count off the 4,096-element blocks
    for (const n of [65_536, 300_001]) {
      const [p, g, m] = [normal(n, 6), normal(n, 7, 0.1), normal(n, 8, 0.01)];
      const v = normal(n, 9, 0.001).map((x) => x * x);
      const [one, two] = onThreads(() => {
        const outs: [Float32Array, Float32Array, Float32Array] = [
          new Float32Array(n),
          new Float32Array(n),
          new Float32Array(n),
        ];
        const [p2, m2, v2] = outs;
        blas.adam(
          p,
          0,
          g,
          0,
          m,
          0,
          v,
          0,
          p2,
          0,
          m2,
          0,
          v2,
          0,
          n,
          0.9,
          0.1,
          0.999,
          0.001,
          1e-8,
          3e-4,
          0.03,
          0.9999,
          0.7,
        );
        return outs;
      });
      for (let k = 0; k < 3; k++)
        expect(bytesEqual(two[k] as Float32Array, one[k] as Float32Array), `output ${k}, n ${n}`).toBe(true);
      expect(one[0][n - 1]).not.toBe(p[n - 1]);
    }
  });
});
