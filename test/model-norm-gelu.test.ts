/**
 * LayerNorm and GELU (norm-gelu.ts) against stock autodiff: values and gradients for random
 * inputs, on the wasm backend with its own kernels (the ops' tfjs equations) and, where the addon
 * is built, with OpenBLAS and the addon's fused kernels; the inference flavours equal the training
 * forward; and the fused kernels refuse arrays too small for what they would touch.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { FUSED, hasFusedKernel } from "../services/core/src/model/fused-kernels.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import {
  gelu,
  geluInference,
  geluReference,
  layerNorm,
  layerNormInference,
  layerNormReference,
} from "../services/core/src/model/norm-gelu.js";
import { setWasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { bytesEqual, scaledError } from "./helpers/model-checks.js";

const blas = loadBlas({}).addon;
const kinds = blas === null ? (["wasm"] as const) : (["wasm", "blas"] as const);

describe("norm and gelu", () => {
  let initial: ReturnType<typeof wasmMatMulKind>;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
  });
  afterAll(() => setWasmMatMul(initial, blas));

  /** Values of f and its gradients w.r.t. every input for the upstream gradient dy. */
  const valueAndGrads = (f: (...xs: tf.Tensor[]) => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor) =>
    tf.tidy(() => {
      const value = Array.from(f(...xs).dataSync());
      const grads = tf.grads((...ys: tf.Tensor[]) => tf.sum(tf.mul(f(...ys), dy)))(xs);
      return { value, grads: grads.map((g) => Array.from(g.dataSync())) };
    });

  for (const kind of kinds) {
    it(`norm and gelu - values and gradients equal stock autodiff (${kind})`, () => {
      setWasmMatMul(kind, blas);
      expect(hasFusedKernel(FUSED.layerNorm)).toBe(kind === "blas");
      const before = tf.memory().numTensors;
      // rows of very different means and scales, widths off the 4-wide unrolling
      for (const [n, c] of [
        [37, 128],
        [5, 7],
      ] as const) {
        const x = tf.tidy(() =>
          tf.add(
            tf.mul(
              tf.randomNormal([n, c], 0, 1, "float32", 1),
              tf.randomUniform([n, 1], 0.1, 20, "float32", 2),
            ),
            tf.randomNormal([n, 1], 0, 50, "float32", 3),
          ),
        ) as tf.Tensor2D;
        const g = tf.randomNormal([c], 1, 0.3, "float32", 4) as tf.Tensor1D;
        const b = tf.randomNormal([c], 0, 0.3, "float32", 5) as tf.Tensor1D;
        const dy = tf.randomNormal([n, c], 0, 1, "float32", 6);
        const ln = (f: typeof layerNorm) =>
          valueAndGrads(
            (...t) => f(t[0] as tf.Tensor2D, t[1] as tf.Tensor1D, t[2] as tf.Tensor1D),
            [x, g, b],
            dy,
          );
        const [got, want] = [ln(layerNorm), ln(layerNormReference)];
        expect(scaledError(got.value, want.value), `LayerNorm ${n}×${c}`).toBeLessThan(1e-5);
        ["x", "γ", "β"].forEach((name, i) => {
          expect(
            scaledError(got.grads[i] as number[], want.grads[i] as number[]),
            `LayerNorm ∂${name}`,
          ).toBeLessThan(1e-5);
        });
        expect(
          scaledError(
            tf.tidy(() => layerNormInference(x, g, b).dataSync()),
            got.value,
          ),
        ).toBe(0);

        const z = tf.tidy(() => tf.mul(tf.randomNormal([n, c], 0, 1, "float32", 7), 3));
        const [gg, gw] = [valueAndGrads(gelu, [z], dy), valueAndGrads(geluReference, [z], dy)];
        expect(scaledError(gg.value, gw.value), `GELU ${n}×${c}`).toBeLessThan(1e-5);
        expect(scaledError(gg.grads[0] as number[], gw.grads[0] as number[]), "GELU ∂x").toBeLessThan(1e-5);
        expect(
          scaledError(
            tf.tidy(() => geluInference(z).dataSync()),
            gg.value,
          ),
        ).toBe(0);
        tf.dispose([x, g, b, dy, z]);
      }
      expect(tf.memory().numTensors, "no tensor leak").toBe(before);
    });
  }

  it.skipIf(blas === null)(
    "norm and gelu - the fused kernels (Adam's too) refuse arrays too small for their counts",
    () => {
      const addon = blas as NonNullable<typeof blas>;
      const small = new Float32Array(4);
      expect(() => addon.geluForward(small, 0, small, 1, 4)).toThrow(RangeError);
      expect(() => addon.geluBackward(small, 0, small, 0, small, 0, 5)).toThrow(/out of range/);
      expect(() =>
        addon.layerNorm(small, 0, small, 0, small, 0, small, 0, small, 0, small, 0, 2, 4, 1e-5),
      ).toThrow(RangeError);
      expect(() =>
        addon.layerNormGrad(small, 0, small, 0, small, 0, small, 0, small, 0, small, 0, small, 0, 1, 0),
      ).toThrow(/cols > 0/);
      expect(() => addon.geluForward(new Float64Array(4) as unknown as Float32Array, 0, small, 0, 4)).toThrow(
        TypeError,
      );
      // Adam's seven arrays, the last (v') one element short
      const arrays = Array.from({ length: 7 }, (_, k) => [k === 6 ? new Float32Array(3) : small, 0]).flat();
      const adam = addon.adam as (...a: unknown[]) => void;
      expect(() => adam(...arrays, 4, 0.9, 0.1, 0.999, 0.001, 1e-8, 1, 1, 1, 1)).toThrow(/out of range/);
    },
  );

  it.skipIf(blas === null)(
    "norm and gelu - GELU on two OpenBLAS threads splits in blocks and is bitwise GELU on one",
    () => {
      const addon = blas as NonNullable<typeof blas>;
      const threads = addon.info().threads;
      // the MLP's [64 × 45, 512] activations and a length off the 4,096-element blocks
      for (const n of [64 * 45 * 512, 200_003]) {
        const x = Float32Array.from(tf.tidy(() => tf.randomNormal([n], 0, 3, "float32", 9).dataSync()));
        const dy = Float32Array.from(tf.tidy(() => tf.randomNormal([n], 0, 1, "float32", 10).dataSync()));
        const run = (t: number) => {
          addon.setThreads(t);
          const [y, dx] = [new Float32Array(n), new Float32Array(n)];
          addon.geluForward(x, 0, y, 0, n);
          addon.geluBackward(dy, 0, x, 0, dx, 0, n);
          return { y, dx };
        };
        try {
          const [one, two] = [run(1), run(2)];
          expect(bytesEqual(two.y, one.y), `forward, n ${n}`).toBe(true);
          expect(bytesEqual(two.dx, one.dx), `backward, n ${n}`).toBe(true);
          expect(one.y[n - 1]).not.toBe(0);
        } finally {
          addon.setThreads(threads);
        }
      }
    },
  );
});
