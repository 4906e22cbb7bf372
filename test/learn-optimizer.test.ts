import { createRequire } from "node:module";
import { dirname } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { beforeAll, describe, expect, it } from "vitest";
import { Adam, clipByGlobalNorm } from "../services/core/src/learn/adam.js";
import { MovingAverageBaseline } from "../services/core/src/learn/baseline.js";
import { trainStep } from "../services/core/src/learn/optimizer.js";
import { buildPgBatch, disposePgBatch, type PgTrajectory } from "../services/core/src/learn/reinforce.js";
import { rng } from "./helpers/uniform.js";

const require = createRequire(import.meta.url);

beforeAll(async () => {
  setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"))}/`);
  await tf.setBackend("cpu");
});

// Toy "LM": vocabulary of 4 ids (3 = BOS = pad); logits = onehot(token)·W + b, a bigram table.
const V = 4;
const BOS = 3;
function toyModel(seed: number) {
  const w = tf.tidy(() =>
    tf.variable(tf.randomNormal([V, V], 0, 0.01, "float32", seed), true, `toy-w-${seed}`),
  );
  const b = tf.tidy(() => tf.variable(tf.zeros([V]), true, `toy-b-${seed}`));
  const forward = (tokens: tf.Tensor2D): tf.Tensor3D =>
    tf.tidy(() => {
      const [bsz, t] = tokens.shape;
      const x = tf.oneHot(tokens.reshape([-1]), V).cast("float32"); // [B·T, V]
      return tf.add(tf.matMul(x, w), b).reshape([bsz, t, V]) as tf.Tensor3D;
    });
  return { forward, variables: [w, b], dispose: () => tf.dispose([w, b]) };
}

/** Samples one completion token after BOS for each of n rows; returns tokens and their log-probs. */
function sample(forward: (t: tf.Tensor2D) => tf.Tensor3D, n: number, rand: () => number) {
  const probs = tf.tidy(() => tf.softmax(forward(tf.fill([1, 1], BOS, "int32") as tf.Tensor2D)).dataSync());
  const out: { token: number; logp: number }[] = [];
  for (let i = 0; i < n; i++) {
    let u = rand();
    let k = 0;
    while (k < V - 1 && u >= (probs[k] as number)) u -= probs[k++] as number;
    out.push({ token: k, logp: Math.log(probs[k] as number) });
  }
  return { out, probs: Array.from(probs) };
}

describe("optimizer", () => {
  it("optimizer - clipByGlobalNorm scales by min(1, c/‖g‖) and returns the pre-clip norm", () => {
    const g = [tf.tensor1d([3, 0]), tf.tensor2d([[4]])];
    // ‖g‖ = √(9 + 16) = 5; c = 1 → scale 0.2
    const a = clipByGlobalNorm(g, 1);
    expect(a.globalNorm.dataSync()[0]).toBeCloseTo(5, 6);
    expect(a.clipped[0]?.arraySync()).toEqual([expect.closeTo(0.6, 6), 0]);
    expect(a.clipped[1]?.arraySync()).toEqual([[expect.closeTo(0.8, 6)]]);
    // c = 10 > ‖g‖ and c = 0 (off): unchanged
    for (const c of [10, 0]) {
      const b = clipByGlobalNorm(g, c);
      expect(b.clipped[0]?.arraySync()).toEqual([3, 0]);
      expect(b.clipped[1]?.arraySync()).toEqual([[4]]);
      tf.dispose([b.globalNorm, ...b.clipped]);
    }
    // zero gradient: no NaN
    const z = clipByGlobalNorm([tf.zeros([2])], 1);
    expect(z.clipped[0]?.arraySync()).toEqual([0, 0]);
    tf.dispose([...g, a.globalNorm, ...a.clipped, z.globalNorm, ...z.clipped]);
  });

  it("optimizer - Adam matches tf.train.adam and resumes exactly from its saved state", async () => {
    const grads = [
      [0.5, -1, 2],
      [0.1, 0.3, -0.2],
      [-1, 1, 0],
      [2, 2, -2],
      [0.01, 0, 5],
    ];
    const ours = tf.tidy(() => tf.variable(tf.tensor1d([1, 2, 3]), true, "adam-ours"));
    const theirs = tf.tidy(() => tf.variable(tf.tensor1d([1, 2, 3]), true, "adam-theirs"));
    const adam = new Adam({ learningRate: 0.05 });
    const ref = tf.train.adam(0.05, 0.9, 0.999, 1e-8);
    let saved: Awaited<ReturnType<Adam["getState"]>> | undefined;
    let savedValue: Float32Array | undefined;
    for (const [i, g] of grads.entries()) {
      const gt = tf.tensor1d(g);
      adam.applyGradients([ours], [gt]);
      ref.applyGradients([{ name: "adam-theirs", tensor: gt }]);
      gt.dispose();
      if (i === 2) {
        saved = await adam.getState();
        savedValue = Float32Array.from(ours.dataSync());
      }
    }
    const want = theirs.dataSync();
    Array.from(ours.dataSync()).forEach((x, i) => {
      expect(x).toBeCloseTo(want[i] as number, 5);
    });
    // resume a fresh Adam from the state after step 3 and replay steps 4–5
    const resumed = tf.tidy(() => tf.variable(tf.tensor1d(savedValue as Float32Array), true, "adam-resumed"));
    const adam2 = new Adam({ learningRate: 0.05 });
    const slot = saved?.slots["adam-ours"];
    if (saved === undefined || slot === undefined) throw new Error("no saved state");
    adam2.setState({ step: saved.step, slots: { "adam-resumed": slot } });
    expect(adam2.step).toBe(3);
    for (const g of grads.slice(3)) tf.tidy(() => adam2.applyGradients([resumed], [tf.tensor1d(g)]));
    expect(Array.from(resumed.dataSync())).toEqual(Array.from(ours.dataSync()));
    adam.dispose();
    adam2.dispose();
    ref.dispose();
    tf.dispose([ours, theirs, resumed]);
  });

  it("optimizer - trainStep lowers the loss on a fixed batch and leaks no tensors, on cpu and wasm", async () => {
    const lossesBy: Record<string, number[]> = {};
    for (const backend of ["cpu", "wasm"]) {
      expect(await tf.setBackend(backend)).toBe(true);
      const before = tf.memory().numTensors;
      const model = toyModel(1);
      const traj: PgTrajectory[] = [
        { promptTokens: [], completionTokens: [2, 1], reward: 1, refLogprobs: [-1.3863, -1.3863] },
        { promptTokens: [], completionTokens: [0, 0], reward: -1, refLogprobs: [-1.3863, -1.3863] },
      ];
      const built = buildPgBatch(traj, { bosId: BOS, padId: BOS, vocabSize: V, gamma: 1, baseline: 0 });
      const adam = new Adam({ learningRate: 0.05 });
      const cfg = { klCoef: 0.05, klEstimator: "k3" as const, entropyCoef: 0.01, maxGradNorm: 1 };
      const losses: number[] = [];
      let tensorsAfterWarmup = 0;
      for (let i = 0; i < 8; i++) {
        const r = await trainStep(model.forward, model.variables, built.tokens, built.batch, cfg, adam);
        expect(r.applied).toBe(true);
        expect(r.gradNorm).toBeGreaterThan(0);
        losses.push(r.loss);
        if (i === 1) tensorsAfterWarmup = tf.memory().numTensors; // Adam's moments exist from step 1 on
      }
      expect(tf.memory().numTensors).toBe(tensorsAfterWarmup);
      expect(losses.at(-1)).toBeLessThan(losses[0] as number);
      disposePgBatch(built);
      adam.dispose();
      model.dispose();
      expect(tf.memory().numTensors).toBe(before);
      lossesBy[backend] = losses;
    }
    lossesBy.cpu?.forEach((l, i) => {
      expect(l).toBeCloseTo(lossesBy.wasm?.[i] as number, 4);
    });
    await tf.setBackend("cpu");
  });

  it("optimizer - trainStep skips a non-finite update and leaves the weights alone", async () => {
    const model = toyModel(3);
    const built = buildPgBatch([{ promptTokens: [], completionTokens: [1], reward: 1, refLogprobs: [-1] }], {
      bosId: BOS,
      padId: BOS,
      vocabSize: V,
      gamma: 1,
      baseline: 0,
    });
    const nan = tf.fill([1, 1], Number.NaN) as tf.Tensor2D;
    const before = model.variables.map((v) => Array.from(v.dataSync()));
    const adam = new Adam({ learningRate: 0.1 });
    const cfg = { klCoef: 0, klEstimator: "k3" as const, entropyCoef: 0, maxGradNorm: 1 };
    const r = await trainStep(
      model.forward,
      model.variables,
      built.tokens,
      { ...built.batch, advantages: nan },
      cfg,
      adam,
    );
    expect(r.applied).toBe(false);
    expect(model.variables.map((v) => Array.from(v.dataSync()))).toEqual(before);
    tf.dispose(nan);
    disposePgBatch(built);
    adam.dispose();
    model.dispose();
  });

  it("optimizer - trainStep learns the best arm of a toy bandit", async () => {
    const model = toyModel(2);
    const rand = rng(7);
    const baseline = new MovingAverageBaseline(0.9);
    const adam = new Adam({ learningRate: 0.1 });
    const cfg = { klCoef: 0, klEstimator: "k3" as const, entropyCoef: 0, maxGradNorm: 1 };
    const refLogp = Math.log(1 / V); // reference = the near-uniform initial policy
    let probs: number[] = [];
    for (let step = 0; step < 60; step++) {
      const s = sample(model.forward, 16, rand);
      probs = s.probs;
      // arm 2 pays 1, the others 0: the optimum puts all mass on 2
      const traj = s.out.map((o) => ({
        promptTokens: [],
        completionTokens: [o.token],
        reward: o.token === 2 ? 1 : 0,
        refLogprobs: [refLogp],
      }));
      const built = buildPgBatch(traj, {
        bosId: BOS,
        padId: BOS,
        vocabSize: V,
        gamma: 1,
        baseline: baseline.value,
      });
      baseline.update(built.returns);
      await trainStep(model.forward, model.variables, built.tokens, built.batch, cfg, adam);
      disposePgBatch(built);
    }
    expect(probs[2]).toBeGreaterThan(0.9);
    expect(baseline.value).toBeGreaterThan(0.7);
    adam.dispose();
    model.dispose();
  });
});
