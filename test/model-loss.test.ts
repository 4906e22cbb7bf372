/**
 * The log-prob and entropy ops of model/loss.ts (hand-written gradients) against plain autodiff
 * through logSoftmax: values and gradients for random logits at several scales, on the wasm
 * backend with its own kernels and (where the addon is built) with OpenBLAS and the fused softmax.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { FUSED, hasFusedKernel } from "../services/core/src/model/fused-kernels.js";
import {
  selectLogprobs,
  selectLogprobsReference,
  tokenEntropy,
  tokenEntropyReference,
} from "../services/core/src/model/loss.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import { setWasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { scaledError } from "./helpers/model-checks.js";

const blas = loadBlas({}).addon;
const kinds = blas === null ? (["wasm"] as const) : (["wasm", "blas"] as const);

describe("loss ops", () => {
  let initial: ReturnType<typeof wasmMatMulKind>;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
  });
  afterAll(() => setWasmMatMul(initial, blas));

  /** ∂(Σ_n w_n H_n)/∂z in float64: w_n p_v (−log p_v − H_n) for every row n of z [B, T, V]. */
  const entropyGradient64 = (z: tf.Tensor3D, w: tf.Tensor2D): Float64Array => {
    const v = z.shape[2];
    const [zs, ws] = [z.dataSync(), w.dataSync()];
    const out = new Float64Array(zs.length);
    for (let r = 0; r < ws.length; r++) {
      const row = Array.from(zs.subarray(r * v, (r + 1) * v));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
      const h = row.reduce((s, x) => s - Math.exp(x - lse) * (x - lse), 0);
      row.forEach((x, j) => {
        out[r * v + j] = (ws[r] as number) * Math.exp(x - lse) * (lse - x - h);
      });
    }
    return out;
  };

  /** Value and ∂(Σ w·f)/∂z of `f` at logits `z`, with random weights w (a generic upstream gradient). */
  const valueAndGrad = (f: (z: tf.Tensor3D) => tf.Tensor2D, z: tf.Tensor3D, w: tf.Tensor2D) => {
    const { value, grad } = tf.valueAndGrad((x: tf.Tensor) => tf.sum(tf.mul(f(x as tf.Tensor3D), w)))(z);
    const out = { value: tf.tidy(() => f(z).dataSync()), grad: grad.dataSync() };
    tf.dispose([value, grad]);
    return out;
  };

  for (const kind of kinds) {
    it(`loss ops - log-probs and entropies and their gradients equal autodiff through logSoftmax (${kind})`, () => {
      setWasmMatMul(kind, blas);
      expect(hasFusedKernel(FUSED.softmaxLse), "fused softmax only with the addon").toBe(kind === "blas");
      const [b, t, v] = [3, 5, 258];
      const ids = tf.tensor2d(
        Array.from({ length: b * t }, (_, i) => (i * 97 + 5) % v),
        [b, t],
        "int32",
      );
      const w = tf.randomNormal([b, t], 0, 1, "float32", 2) as tf.Tensor2D;
      for (const scale of [0.1, 3, 30]) {
        const z = tf.randomNormal([b, t, v], 0, scale, "float32", 7) as tf.Tensor3D;
        const before = tf.memory().numTensors;
        const pairs = [
          [
            "log-probs",
            (x: tf.Tensor3D) => selectLogprobs(x, ids),
            (x: tf.Tensor3D) => selectLogprobsReference(x, ids),
          ],
          ["entropy", tokenEntropy, tokenEntropyReference],
        ] as const;
        for (const [name, ours, reference] of pairs) {
          const got = valueAndGrad(ours, z, w);
          const want = valueAndGrad(reference, z, w);
          const at = `${name}, scale ${scale}`;
          expect(scaledError(got.value, want.value), `${at} value`).toBeLessThan(1e-5);
          if (name === "entropy" && scale < 1) {
            // Near-uniform rows: ∂H/∂z = p (−log p − H) cancels to ~1e-5 of its scale in float32
            // whichever way it is computed, so both are held to the float64 value instead.
            const exact = entropyGradient64(z, w);
            expect(scaledError(got.grad, exact), at).toBeLessThan(2 * scaledError(want.grad, exact) + 1e-6);
          } else {
            expect(scaledError(got.grad, want.grad), `${at} gradient`).toBeLessThan(1e-5);
          }
        }
        expect(tf.memory().numTensors, "no tensor leak").toBe(before);
        z.dispose();
      }
      tf.dispose([ids, w]);
    });
  }

  it("loss ops - a peaked distribution's entropy stays accurate and non-negative", () => {
    // one logit far above the rest: H ≈ 0, where lse − E_p[z] would cancel
    const z = tf.tidy(() =>
      tf
        .oneHot(tf.tensor2d([[3, 1]], [1, 2], "int32"), 8)
        .cast("float32")
        .mul(40),
    ) as tf.Tensor3D;
    const h = tokenEntropy(z).dataSync();
    const ref = tokenEntropyReference(z).dataSync();
    for (let i = 0; i < h.length; i++) {
      expect(h[i] as number).toBeGreaterThanOrEqual(0);
      expect(Math.abs((h[i] as number) - (ref[i] as number))).toBeLessThan(1e-12 + 1e-5 * (ref[i] as number));
    }
    z.dispose();
  });

  it.skipIf(blas === null)(
    "loss ops - the fused softmax refuses arrays too small for its rows and columns",
    () => {
      const addon = blas as NonNullable<typeof blas>;
      const z = new Float32Array(6);
      expect(() =>
        addon.softmaxLse(z, 0, new Float32Array(6), 0, new Float32Array(2), 0, 2, 3),
      ).not.toThrow();
      expect(() => addon.softmaxLse(z, 1, new Float32Array(6), 0, new Float32Array(2), 0, 2, 3)).toThrow(
        RangeError,
      );
      expect(() => addon.softmaxLse(z, 0, new Float32Array(6), 0, new Float32Array(1), 0, 2, 3)).toThrow(
        /out of range/,
      );
      expect(() => addon.softmaxLse(z, 0, z, 0, z, 0, 2, 0)).toThrow(/cols > 0/);
    },
  );
});
