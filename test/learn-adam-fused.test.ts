/**
 * Adam's fused kernel (the OpenBLAS path, fused-kernels.ts) against its tfjs ops: the same float32
 * operations in the same order, so weights and moments must be bitwise equal after several AdamW
 * steps, decayed and undecayed tensors alike — which is what lets a run resume exactly on a
 * machine with or without the addon.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Adam } from "../services/core/src/learn/adam.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { FUSED, hasFusedKernel } from "../services/core/src/model/fused-kernels.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import { setWasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";

const blas = loadBlas({}).addon;

describe.skipIf(blas === null)("adam fused", () => {
  let initial: ReturnType<typeof wasmMatMulKind>;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
  });
  afterAll(() => setWasmMatMul(initial, blas));

  /** Weights and moments after 5 AdamW steps with seeded gradients, on the given kernels. */
  const run = (kind: "blas" | "wasm") => {
    setWasmMatMul(kind, blas);
    expect(hasFusedKernel(FUSED.adam)).toBe(kind === "blas");
    const vars = tf.tidy(() => [
      tf.variable(tf.randomNormal([7, 5], 0, 1, "float32", 1), true, `adam-fused-w-${kind}`),
      tf.variable(tf.randomNormal([5], 0, 1, "float32", 2), true, `adam-fused-b-${kind}`),
    ]);
    const adam = new Adam({ learningRate: 3e-3, weightDecay: 0.1, decayMatricesOnly: true });
    for (let step = 0; step < 5; step++) {
      // gradients from tiny to large, so ε and the bias corrections all matter (seeds ≥ 1: 0 means unseeded)
      const grads = vars.map((v, i) =>
        tf.tidy(() => tf.mul(tf.randomNormal(v.shape, 0, 1, "float32", 10 * step + i + 1), 10 ** (step - 3))),
      );
      adam.applyGradients(vars, grads);
      tf.dispose(grads);
    }
    return adam.getState().then((state) => {
      const out = { weights: vars.map((v) => Array.from(v.dataSync())), slots: Object.values(state.slots) };
      adam.dispose();
      tf.dispose(vars);
      return out;
    });
  };

  it("adam fused - weights and moments after AdamW steps are bitwise those of the tfjs ops", async () => {
    const before = tf.memory().numTensors;
    const fused = await run("blas");
    const ops = await run("wasm");
    expect(fused.weights).toEqual(ops.weights);
    expect(fused.slots.map((s) => [Array.from(s.m), Array.from(s.v)])).toEqual(
      ops.slots.map((s) => [Array.from(s.m), Array.from(s.v)]),
    );
    expect(tf.memory().numTensors, "no tensor leak").toBe(before);
  });
});
