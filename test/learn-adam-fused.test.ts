/**
 * Adam's fused kernel (the OpenBLAS path, fused-kernels.ts) against its tfjs ops: the same float32
 * operations in the same order, so weights and moments must be bitwise equal after several AdamW
 * steps, decayed and undecayed tensors alike — which is what lets a run resume exactly on a
 * machine with or without the addon.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Adam, clipByGlobalNorm, clipScale, globalGradNorm } from "../services/core/src/learn/adam.js";
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

  /**
   * Weights and moments after 5 AdamW steps with seeded gradients, on the given kernels; with
   * `clip`, the gradients' global norm is clipped to 0.5 either first (clipByGlobalNorm) or by the
   * factor the update applies itself (clipScale, as trainStep does).
   */
  const run = (kind: "blas" | "wasm", clip: "none" | "first" | "inside" = "none") => {
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
      if (clip === "first") {
        const { clipped, globalNorm } = clipByGlobalNorm(grads, 0.5);
        adam.applyGradients(vars, clipped);
        tf.dispose([...clipped, globalNorm]);
      } else if (clip === "inside") {
        const norm = globalGradNorm(grads);
        adam.applyGradients(vars, grads, clipScale(norm.dataSync()[0] as number, 0.5));
        norm.dispose();
      } else adam.applyGradients(vars, grads);
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

  it("adam fused - clipping by the factor inside the update is bitwise clipping the gradients first, on both kernels", async () => {
    const before = tf.memory().numTensors;
    const [fusedFirst, fusedInside, opsFirst, opsInside] = [
      await run("blas", "first"),
      await run("blas", "inside"),
      await run("wasm", "first"),
      await run("wasm", "inside"),
    ];
    // The norms of the later steps' gradients (up to 10×) are above 0.5: the clip acted.
    expect(fusedFirst.weights).not.toEqual((await run("blas")).weights);
    for (const other of [fusedInside, opsFirst, opsInside]) {
      expect(other.weights).toEqual(fusedFirst.weights);
      expect(other.slots.map((x) => [Array.from(x.m), Array.from(x.v)])).toEqual(
        fusedFirst.slots.map((x) => [Array.from(x.m), Array.from(x.v)]),
      );
    }
    expect(tf.memory().numTensors, "no tensor leak").toBe(before);
  });
});
