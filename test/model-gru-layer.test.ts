/**
 * The whole-sequence GRU layer (gru-layer.ts, backpropagation through time written out) against
 * the same recurrence step by step under stock autodiff: outputs and the gradients of a, W_hh,
 * b_hh and h₀, with and without update masks, for one and for several steps, on the wasm backend
 * with its own kernels (tfjs ops) and, where the addon is built, with OpenBLAS and the native
 * recurrent kernels.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { gruLayer, gruLayerStepwise } from "../services/core/src/model/gru-layer.js";
import { linearReference } from "../services/core/src/model/layers.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import { sigmoidTanh } from "../services/core/src/model/recurrent-cells.js";
import { hasRecurrentKernel, RECURRENT } from "../services/core/src/model/recurrent-kernels.js";
import { setWasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { scaledError } from "./helpers/model-checks.js";

const blas = loadBlas({}).addon;
const kinds = blas === null ? (["wasm"] as const) : (["wasm", "blas"] as const);

describe("gru layer", () => {
  let initial: ReturnType<typeof wasmMatMulKind>;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
  });
  afterAll(() => setWasmMatMul(initial, blas));

  const [b, h] = [5, 6];
  /** Random inputs for `steps` steps; `masked`: some rows skip some steps (m = 0). */
  const inputs = (steps: number, masked: boolean) => {
    const a = tf.randomNormal([steps * b, 3 * h], 0, 1, "float32", 1) as tf.Tensor2D;
    const w = tf.randomNormal([h, 3 * h], 0, 0.5, "float32", 2) as tf.Tensor2D;
    const bias = tf.randomNormal([3 * h], 0, 0.5, "float32", 3) as tf.Tensor1D;
    const h0 = tf.randomNormal([b, h], 0, 1, "float32", 4) as tf.Tensor2D;
    const m = masked
      ? tf.tensor2d(
          Array.from({ length: steps * b }, (_, k) => (k % 3 === 1 ? 0 : 1)),
          [steps * b, 1],
        )
      : null;
    // upstream gradient of every step's h
    const dy = tf.randomNormal([steps * b, h], 0, 1, "float32", 5) as tf.Tensor2D;
    return { a, w, bias, h0, m, dy };
  };

  for (const kind of kinds) {
    it(`gru layer - ${kind} path ${kind === "blas" ? "runs the native kernels" : "runs tfjs ops"}`, () => {
      setWasmMatMul(kind, blas);
      expect(hasRecurrentKernel(RECURRENT.gruForward)).toBe(kind === "blas");
      expect(hasRecurrentKernel(RECURRENT.gruBackward)).toBe(kind === "blas");
    });
    for (const [steps, masked] of [
      [1, false],
      [7, false],
      [7, true],
    ] as const) {
      it(`gru layer - outputs and gradients equal step-by-step autodiff (${kind}, ${steps} steps${masked ? ", masked" : ""})`, () => {
        setWasmMatMul(kind, blas);
        const x = inputs(steps, masked);
        const before = tf.memory().numTensors;
        type Layer = (a: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor1D, h0: tf.Tensor2D) => tf.Tensor2D;
        const fused: Layer = (a, w, bias, h0) => gruLayer(a, w, bias, h0, x.m, sigmoidTanh);
        const stepwise: Layer = (a, w, bias, h0) =>
          gruLayerStepwise(a, w, bias, h0, x.m, tf.tanh, linearReference);
        const run = (layer: Layer) =>
          tf.tidy(() => {
            const out = layer(x.a, x.w, x.bias, x.h0).dataSync();
            const grads = tf
              .grads((a, w, bias, h0) =>
                tf.sum(
                  tf.mul(
                    layer(a as tf.Tensor2D, w as tf.Tensor2D, bias as tf.Tensor1D, h0 as tf.Tensor2D),
                    x.dy,
                  ),
                ),
              )([x.a, x.w, x.bias, x.h0])
              .map((g) => g.dataSync());
            return { out, grads };
          });
        const [got, want] = [run(fused), run(stepwise)];
        expect(tf.memory().numTensors, "no tensor leak").toBe(before);
        expect(scaledError(got.out, want.out), "h").toBeLessThan(1e-5);
        ["a", "W_hh", "b_hh", "h0"].forEach((name, i) => {
          expect(scaledError(got.grads[i] as Float32Array, want.grads[i] as Float32Array), name).toBeLessThan(
            1e-5,
          );
        });
        if (x.m !== null) {
          // row 1 is masked at step 0 (mask row k = 1), so its first state is exactly its h₀
          const h0 = x.h0.dataSync();
          for (let j = 0; j < h; j++) expect(got.out[h + j]).toBe(h0[h + j]);
        }
        tf.dispose([x.a, x.w, x.bias, x.h0, x.dy, ...(x.m === null ? [] : [x.m])]);
      });
    }
  }
});
