import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type Baseline,
  RunConfigSchema,
  TrajectorySchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { runConfigFromSettings, settingsFromRunConfig } from "../services/core/src/config/run-config.js";
import { type BaselineKind, defaultConfig, type RunSettings } from "../services/core/src/config/settings.js";
import { runConfigRules } from "../services/core/src/grpc/rules.js";
import { validate } from "../services/core/src/grpc/validation.js";
import { Adam } from "../services/core/src/learn/adam.js";
import { computeAdvantages, NORM_EPS } from "../services/core/src/learn/advantages.js";
import { MovingAverageBaseline } from "../services/core/src/learn/baseline.js";
import { klPenalizedRewards } from "../services/core/src/learn/kl.js";
import { KlController } from "../services/core/src/learn/kl-controller.js";
import { trainStep } from "../services/core/src/learn/optimizer.js";
import {
  buildPgBatch,
  disposePgBatch,
  type PgBatch,
  type PgLossConfig,
  reinforceLoss,
} from "../services/core/src/learn/reinforce.js";
import { runLearningRate } from "../services/core/src/learn/schedule.js";
import { createModel } from "../services/core/src/model/checkpoint.js";
import { ReinforceLearner } from "../services/optimizer/reinforce-learner.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";
import { rng } from "./helpers/uniform.js";

const require = createRequire(import.meta.url);

beforeAll(async () => {
  setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"))}/`);
  await tf.setBackend("cpu");
});

function close(a: number, b: number, tol = 1e-5): void {
  expect(Math.abs(a - b)).toBeLessThan(tol);
}

/** log-softmax of one row, in float64. */
function logSoftmax(z: number[]): number[] {
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((s, x) => s + Math.exp(x - m), 0));
  return z.map((x) => x - lse);
}

// A tiny [1, T, 3] case: logits per position, the sampled actions, advantages.
const LOGITS = [
  [0.2, -0.4, 1.0],
  [1.5, 0.1, -0.3],
  [-0.7, 0.3, 0.6],
  [0.0, 0.9, -1.1],
];
const ACTIONS = [0, 1, 2, 1];
const LOGP = LOGITS.map((z, t) => logSoftmax(z)[ACTIONS[t] as number] as number);
const PROBS = LOGITS.map((z) => logSoftmax(z).map(Math.exp));

function batchOf(opts: { adv: number[]; behaviour?: number[]; ref?: number[]; mask?: number[] }): PgBatch {
  const t = opts.adv.length;
  return {
    actions: tf.tensor2d([ACTIONS.slice(0, t)], [1, t], "int32"),
    mask: tf.tensor2d([opts.mask ?? new Array(t).fill(1)], [1, t]),
    advantages: tf.tensor2d([opts.adv], [1, t]),
    refLogprobs: tf.tensor2d([opts.ref ?? new Array(t).fill(-1)], [1, t]),
    ...(opts.behaviour ? { behaviourLogprobs: tf.tensor2d([opts.behaviour], [1, t]) } : {}),
  };
}

const BASE: PgLossConfig = { klCoef: 0, klEstimator: "k1", entropyCoef: 0 };

/** Loss value and ∂L/∂logits of reinforceLoss on the first `t` positions of LOGITS. */
function lossAndGrad(batch: PgBatch, cfg: PgLossConfig, t: number) {
  const logits = tf.tensor3d([LOGITS.slice(0, t)]);
  const f = (z: tf.Tensor) => reinforceLoss(z as tf.Tensor3D, batch, cfg).loss;
  const { value, grad } = tf.valueAndGrad(f)(logits);
  let clip = 0;
  tf.tidy(() => {
    clip = reinforceLoss(logits, batch, cfg).clipFraction.dataSync()[0] as number;
  });
  const out = {
    loss: value.dataSync()[0] as number,
    grad: (grad.arraySync() as number[][][])[0] as number[][],
    clip,
  };
  tf.dispose([logits, value, grad]);
  return out;
}

/** Central finite differences of the loss w.r.t. each logit (float32 tf, h = 1e-2). */
function finiteDiff(batch: PgBatch, cfg: PgLossConfig, t: number, h = 1e-2): number[][] {
  const at = (z: number[][]) =>
    tf.tidy(() => reinforceLoss(tf.tensor3d([z]), batch, cfg).loss.dataSync()[0] as number);
  return LOGITS.slice(0, t).map((row, i) =>
    row.map((_, j) => {
      const plus = LOGITS.slice(0, t).map((r) => [...r]);
      const minus = LOGITS.slice(0, t).map((r) => [...r]);
      (plus[i] as number[])[j] = (row[j] as number) + h;
      (minus[i] as number[])[j] = (row[j] as number) - h;
      return (at(plus) - at(minus)) / (2 * h);
    }),
  );
}

function disposeBatch(b: PgBatch) {
  tf.dispose(Object.values(b) as tf.Tensor[]);
}

describe("estimators", () => {
  it("estimators - a group (or batch) of equal sequence returns is only centred, never divided by ~0", () => {
    // One sample per group, per-token returns that differ from R_0 (per-token rewards / γ < 1):
    // (R_t − R_0)/(0 + ε) would be ~1e6; the divisor is 1 instead.
    const returns = [
      [0.5, 0.2, 0.1],
      [1, 1],
    ];
    expect(computeAdvantages(returns, [0, 1], "group").map((r) => r.map((a) => +a.toFixed(12)))).toEqual([
      [0, -0.3, -0.4],
      [0, 0],
    ]);
    expect(computeAdvantages([[2], [2]], [0, 0], "batch")).toEqual([[0], [0]]);
  });

  it("estimators - each baseline's advantages match the hand computation", () => {
    // Group 0: three samples with sequence returns 1, 2, 6 (sample 0 has two tokens: R = [1, 0.5]).
    // Group 1: two samples with returns 4, 4.
    const returns = [[1, 0.5], [2], [6], [4], [4]];
    const groups = [0, 0, 0, 1, 1];
    expect(computeAdvantages(returns, groups, "none")).toEqual(returns);
    expect(computeAdvantages(returns, groups, "moving-average", 2)).toEqual([[-1, -1.5], [0], [4], [2], [2]]);
    // RLOO: b_0 = (2 + 6)/2 = 4, b_1 = (1 + 6)/2 = 3.5, b_2 = (1 + 2)/2 = 1.5; group 1: 4.
    expect(computeAdvantages(returns, groups, "rloo")).toEqual([[-3, -3.5], [-1.5], [4.5], [0], [0]]);
    // GRPO: group 0 mean 3, std √((4 + 1 + 9)/3); group 1 std 0 → A = 0.
    const sd = Math.sqrt(14 / 3) + NORM_EPS;
    const g = computeAdvantages(returns, groups, "group");
    [[(1 - 3) / sd, (0.5 - 3) / sd], [(2 - 3) / sd], [(6 - 3) / sd], [0], [0]].forEach((row, i) => {
      row.forEach((a, t) => {
        close(g[i]?.[t] as number, a, 1e-9);
      });
    });
    // REINFORCE++: every token of the batch: mean 17.5/6, population std.
    const all = [1, 0.5, 2, 6, 4, 4];
    const m = 17.5 / 6;
    const s = Math.sqrt(all.reduce((acc, x) => acc + (x - m) ** 2, 0) / 6) + NORM_EPS;
    const bn = computeAdvantages(returns, groups, "batch");
    close(bn[0]?.[1] as number, (0.5 - m) / s, 1e-9);
    close(bn[2]?.[0] as number, (6 - m) / s, 1e-9);
    close(
      bn.flat().reduce((a, b) => a + b, 0),
      0,
      1e-9,
    );
    // G = 1: RLOO has no other sample, b = 0.
    expect(computeAdvantages([[3]], [7], "rloo")).toEqual([[3]]);
  });

  it("estimators - PPO-clip loss, logit gradient (zero in the clipped region) and clip fraction", () => {
    const eps = 0.2;
    // ρ and A per token: (1.5, +1) clipped; (0.5, −1) clipped; (1.1, +1) inside; (1.5, −1) min picks ρA.
    const rho = [1.5, 0.5, 1.1, 1.5];
    const adv = [1, -1, 1, -1];
    const behaviour = LOGP.map((lp, t) => lp - Math.log(rho[t] as number));
    const batch = batchOf({ adv, behaviour });
    const cfg: PgLossConfig = { ...BASE, offPolicy: "ppo-clip", clipEpsilon: eps };
    const { loss, grad, clip } = lossAndGrad(batch, cfg, 4);
    // L = −(1/N) Σ min(ρA, clip(ρ, 1−ε, 1+ε)A)
    const terms = rho.map((r, t) => {
      const a = adv[t] as number;
      return Math.min(r * a, Math.min(1 + eps, Math.max(1 - eps, r)) * a);
    });
    close(loss, -terms.reduce((s, x) => s + x, 0) / 4);
    close(clip, 0.5, 1e-7);
    // ∂L/∂z_{t,j} = −(1/N)·A_t·ρ_t·(1[j = a_t] − p_{t,j}) where unclipped, 0 where clipped
    for (let t = 0; t < 4; t++) {
      for (let j = 0; j < 3; j++) {
        const active = t >= 2;
        const onehot = j === ACTIONS[t] ? 1 : 0;
        const want = active
          ? (-(adv[t] as number) * (rho[t] as number) * (onehot - (PROBS[t]?.[j] as number))) / 4
          : 0;
        close(grad[t]?.[j] as number, want);
      }
    }
    // and the same by finite differences (no kink within h of these points)
    const fd = finiteDiff(batch, cfg, 4);
    fd.forEach((row, t) => {
      row.forEach((x, j) => {
        close(grad[t]?.[j] as number, x, 2e-3);
      });
    });
    // on-policy (ρ = 1) PPO-clip is exactly REINFORCE
    const onPolicy = batchOf({ adv, behaviour: LOGP });
    const a = lossAndGrad(onPolicy, cfg, 4);
    const b = lossAndGrad(batchOf({ adv }), BASE, 4);
    a.grad.forEach((row, t) => {
      row.forEach((x, j) => {
        close(x, b.grad[t]?.[j] as number);
      });
    });
    expect(a.clip).toBe(0);
    disposeBatch(batch);
    disposeBatch(onPolicy);
  });

  it("estimators - truncated IS uses sg(min(ρ, c)) as the weight and counts ρ > c", () => {
    const c = 1.2;
    const rho = [1.5, 0.5, 1.1];
    const adv = [1, -2, 0.5];
    // position 2 is masked: its ρ must not count in the clip fraction
    const mask = [1, 1, 0];
    const behaviour = LOGP.slice(0, 3).map((lp, t) => lp - Math.log(rho[t] as number));
    const batch = batchOf({ adv, behaviour, mask });
    const cfg: PgLossConfig = { ...BASE, offPolicy: "truncated", truncation: c };
    const { loss, grad, clip } = lossAndGrad(batch, cfg, 3);
    // L = −(1/N) Σ min(ρ_t, c)·A_t·log π_θ(a_t), N = 2
    const w = rho.map((r) => Math.min(r, c));
    close(
      loss,
      -((w[0] as number) * 1 * (LOGP[0] as number) + (w[1] as number) * -2 * (LOGP[1] as number)) / 2,
    );
    close(clip, 0.5, 1e-7);
    // ∂L/∂z_{t,j} = −(1/N)·min(ρ_t, c)·A_t·(1[j = a_t] − p_{t,j}): the weight is a constant
    for (let t = 0; t < 3; t++) {
      for (let j = 0; j < 3; j++) {
        const onehot = j === ACTIONS[t] ? 1 : 0;
        const want =
          (mask[t] as number) *
          ((-(w[t] as number) * (adv[t] as number) * (onehot - (PROBS[t]?.[j] as number))) / 2);
        close(grad[t]?.[j] as number, want);
      }
    }
    disposeBatch(batch);
  });

  it("estimators - k3 KL in the loss: gradient equals finite differences and (1 − r)·∇log π", () => {
    const ref = [-0.5, -2.0, -1.2, -0.3];
    const batch = batchOf({ adv: [0, 0, 0, 0], ref });
    const beta = 0.5;
    const cfg: PgLossConfig = { ...BASE, klCoef: beta, klEstimator: "k3" };
    const { loss, grad } = lossAndGrad(batch, cfg, 4);
    // KL = (1/N) Σ (r − 1) − log r, r = π_ref/π_θ
    const k3 = LOGP.map((lp, t) => Math.expm1((ref[t] as number) - lp) - ((ref[t] as number) - lp));
    close(loss, (beta * k3.reduce((a, b) => a + b, 0)) / 4);
    const fd = finiteDiff(batch, cfg, 4);
    for (let t = 0; t < 4; t++) {
      const r = Math.exp((ref[t] as number) - (LOGP[t] as number));
      for (let j = 0; j < 3; j++) {
        close(grad[t]?.[j] as number, fd[t]?.[j] as number, 2e-3);
        // ∂k3/∂z = (1 − r)·(1[j = a] − p_j)
        const onehot = j === ACTIONS[t] ? 1 : 0;
        close(grad[t]?.[j] as number, (beta * (1 - r) * (onehot - (PROBS[t]?.[j] as number))) / 4);
      }
    }
    disposeBatch(batch);
  });

  it("estimators - off-policy and k3 losses and gradients agree on cpu and wasm", async () => {
    const rho = [1.5, 0.5, 1.1, 1.5];
    const behaviour = LOGP.map((lp, t) => lp - Math.log(rho[t] as number));
    const cases: PgLossConfig[] = [
      { ...BASE, offPolicy: "ppo-clip", clipEpsilon: 0.2 },
      { ...BASE, offPolicy: "truncated", truncation: 1.2, klCoef: 0.3, klEstimator: "k3", entropyCoef: 0.1 },
    ];
    const results: Record<string, ReturnType<typeof lossAndGrad>[]> = {};
    for (const backend of ["cpu", "wasm"]) {
      expect(await tf.setBackend(backend)).toBe(true);
      const batch = batchOf({ adv: [1, -1, 1, -1], behaviour, ref: [-0.5, -2, -1.2, -0.3] });
      results[backend] = cases.map((cfg) => lossAndGrad(batch, cfg, 4));
      disposeBatch(batch);
    }
    await tf.setBackend("cpu");
    results.cpu?.forEach((c, i) => {
      const w = results.wasm?.[i] as ReturnType<typeof lossAndGrad>;
      close(c.loss, w.loss);
      expect(c.clip).toBe(w.clip);
      c.grad.forEach((row, t) => {
        row.forEach((x, j) => {
          close(x, w.grad[t]?.[j] as number);
        });
      });
    });
  });

  it("estimators - entropy bonus: L = −c·H with ∂H/∂z_j = −p_j (log p_j + H)", () => {
    const batch = batchOf({ adv: [0, 0] });
    const c = 0.3;
    const { loss, grad } = lossAndGrad(batch, { ...BASE, entropyCoef: c }, 2);
    const h = PROBS.slice(0, 2).map((p) => -p.reduce((s, x) => s + x * Math.log(x), 0));
    close(loss, (-c * ((h[0] as number) + (h[1] as number))) / 2);
    for (let t = 0; t < 2; t++) {
      for (let j = 0; j < 3; j++) {
        const p = PROBS[t]?.[j] as number;
        close(grad[t]?.[j] as number, (-c * (-p * (Math.log(p) + (h[t] as number)))) / 2);
      }
    }
    disposeBatch(batch);
  });

  it("estimators - KL in the reward with k3, and adaptive β moves towards the target", () => {
    const lp = [-1, -2];
    const ref = [-1.5, -1.0];
    const k3 = lp.map((x, t) => Math.expm1((ref[t] as number) - x) - ((ref[t] as number) - x));
    const out = klPenalizedRewards([0, 1], lp, ref, 0.1, "k3");
    close(out[0] as number, -0.1 * (k3[0] as number), 1e-12);
    close(out[1] as number, 1 - 0.1 * (k3[1] as number), 1e-12);

    const ctl = new KlController(0.1, 6, 1000);
    // KL above target: e = clip((12 − 6)/6, ±0.2) = 0.2, β ← 0.1·(1 + 0.2·100/1000)
    close(ctl.update(12, 100), 0.1 * 1.02, 1e-12);
    // KL below target: e = clip((5 − 6)/6) = −1/6, β shrinks
    const before = ctl.beta;
    close(ctl.update(5, 100), before * (1 - (1 / 6) * 0.1), 1e-12);
    expect(KlController.fromState(ctl.toState()).beta).toBe(ctl.beta);
    // target 0 = fixed β
    const fixed = new KlController(0.05);
    expect(fixed.update(100, 100)).toBe(0.05);
  });

  it("estimators - warm-up and cosine learning rate", () => {
    const o = { lr: 1, warmupSteps: 4, totalSteps: 14, decay: "cosine" as const };
    close(runLearningRate(0, o), 0.25, 1e-12);
    close(runLearningRate(3, o), 1, 1e-12);
    close(runLearningRate(13, o), 0.1, 1e-12); // floor at the last step
    close(runLearningRate(8, o), 0.1 + 0.45 * (1 + Math.cos((Math.PI * 4) / 9)), 1e-12);
    expect(runLearningRate(100, { ...o, decay: "none" })).toBe(1);
    expect(runLearningRate(1, { ...o, decay: "none" })).toBe(0.5);
    expect(runLearningRate(0, { ...o, warmupSteps: 0, decay: "none" })).toBe(1);
  });

  for (const kind of ["none", "moving-average", "rloo", "group", "batch"] as BaselineKind[]) {
    it(`estimators - a toy bandit reaches ≥ 95% of the optimal reward with baseline '${kind}'`, async () => {
      const { probs } = await banditRun(kind);
      // arm 2 pays 1, others 0: expected reward = p(2); optimum 1
      expect(probs[2]).toBeGreaterThan(0.95);
    });
  }

  for (const mode of ["ppo-clip", "truncated"] as const) {
    it(`estimators - ${mode} learns the bandit from samples of a 4-steps-stale policy`, async () => {
      const { probs, maxClip } = await banditRun("rloo", { mode, stale: 4 });
      expect(probs[2]).toBeGreaterThan(0.95);
      // the policy moved away from the behaviour within a stale window, so some ratios were clipped
      expect(maxClip).toBeGreaterThan(0);
    });
  }

  it("estimators - settings round-trip through RunConfig and bad choices are rejected", () => {
    const s: RunSettings = {
      ...defaultConfig().run,
      baseline: "rloo",
      klIn: "loss",
      klEstimator: "k3",
      klTarget: 4,
      klHorizon: 500,
      weightDecay: 0.01,
      warmupSteps: 3,
      lrDecay: "cosine",
      offPolicy: "truncated",
      clipEpsilon: 0.25,
      truncation: 2,
    };
    const cfg = create(RunConfigSchema, runConfigFromSettings(s));
    validate(runConfigRules, cfg);
    const back = settingsFromRunConfig(cfg, defaultConfig().run);
    for (const k of [
      "baseline",
      "klIn",
      "klEstimator",
      "warmupSteps",
      "lrDecay",
      "offPolicy",
      "klHorizon",
    ] as const) {
      expect(back[k]).toBe(s[k]);
    }
    close(back.clipEpsilon, 0.25, 1e-6);
    // unset fields keep today's defaults
    const d = settingsFromRunConfig(create(RunConfigSchema), defaultConfig().run);
    expect([d.baseline, d.klIn, d.klEstimator, d.klCoef, d.offPolicy]).toEqual([
      "rloo",
      "reward",
      "k1",
      0.1,
      "ppo-clip",
    ]);
    expect(() => validate(runConfigRules, create(RunConfigSchema, { baseline: 9 as Baseline }))).toThrow(
      /baseline/,
    );
    expect(() => validate(runConfigRules, create(RunConfigSchema, { clipEpsilon: 1 }))).toThrow(
      /clip_epsilon/,
    );
    expect(() => validate(runConfigRules, create(RunConfigSchema, { truncation: 0.5 }))).toThrow(
      /truncation/,
    );
  });

  it("estimators - ReinforceLearner trains a GRU policy through the CausalLM interface, without leaks", async () => {
    const gru = createModel(
      { kind: "gru", vocabSize: 258, contextLength: 32, dModel: 16, hidden: 16, nLayers: 1 },
      5,
    );
    const learner = new ReinforceLearner(gru, {
      ...defaultConfig().run,
      baseline: "rloo",
      offPolicy: "truncated",
    });
    expect(learner.modelKind).toBe("gru");
    const trajs = [0, 1].map((g) =>
      create(TrajectorySchema, {
        id: `g${g}`,
        promptIndex: 0,
        sampleIndex: g,
        promptTokens: [72],
        completionTokens: [32, 97 + g],
        behaviourLogprobs: [-5.2, -5.9],
        referenceLogprobs: [-5.0, -5.1],
        reward: g,
      }),
    );
    await learner.step(trajs);
    const before = tf.memory().numTensors;
    const res = await learner.step(trajs);
    expect(tf.memory().numTensors).toBe(before);
    expect(Number.isFinite(res.loss) && res.gradNorm > 0).toBe(true);
    learner.dispose();
  });

  it("estimators - a step with a non-finite gradient is skipped and counted: weights, baseline and β stay", async () => {
    const gru = createModel(
      { kind: "gru", vocabSize: 258, contextLength: 32, dModel: 16, hidden: 16, nLayers: 1 },
      7,
    );
    const learner = new ReinforceLearner(gru, {
      ...defaultConfig().run,
      baseline: "moving-average",
      klTarget: 0.5,
      offPolicy: "ppo-clip",
    });
    const traj = (reward: number, behaviour: number) =>
      [0, 1].map((g) =>
        create(TrajectorySchema, {
          id: `n${g}`,
          promptIndex: 0,
          sampleIndex: g,
          promptTokens: [72],
          completionTokens: [32, 97 + g],
          // A behaviour log-prob of −1e30 overflows ρ = exp(log π_θ − log π_behaviour) to ∞: with a negative
          // advantage the PPO surrogate −min(ρA, clip(ρ)A) is +∞ and the gradient is not finite.
          behaviourLogprobs: [behaviour, behaviour],
          referenceLogprobs: [-5.0, -5.1],
          reward,
        }),
      );
    await learner.step(traj(1, -5));
    const weights = await learner.weightsBlob();
    const state = learner.getState();
    const res = await learner.step(traj(-1, -1e30));
    expect(res.updateSkipped).toBe(true);
    expect(Buffer.from(await learner.weightsBlob()).equals(Buffer.from(weights))).toBe(true);
    expect(learner.getState()).toEqual(state);
    // A finite step afterwards applies again.
    expect((await learner.step(traj(1, -5))).updateSkipped).toBe(false);
    expect(Buffer.from(await learner.weightsBlob()).equals(Buffer.from(weights))).toBe(false);
    learner.dispose();
  });

  it("estimators - ReinforceLearner steps leak no tensors and keep β in its state", async () => {
    const path = await writeTinyCheckpoint(3);
    const settings: RunSettings = {
      ...defaultConfig().run,
      baseline: "group",
      klIn: "loss",
      klEstimator: "k3",
      klTarget: 0.5,
      klHorizon: 10,
      offPolicy: "ppo-clip",
      entropyCoef: 0.01,
      weightDecay: 0.01,
      warmupSteps: 2,
      lrDecay: "cosine",
      steps: 4,
    };
    const learner = await ReinforceLearner.fromCheckpoint(path, settings);
    const trajs = [0, 1].flatMap((p) =>
      [0, 1].map((g) =>
        create(TrajectorySchema, {
          id: `t${p}${g}`,
          promptIndex: p,
          sampleIndex: g,
          promptTokens: [72, 105],
          completionTokens: [32, 97 + g + p, 33],
          behaviourLogprobs: [-4.8, -4.9, -5.5],
          referenceLogprobs: [-5.0, -5.1, -6.0],
          reward: g === 0 ? 1 : -0.5,
        }),
      ),
    );
    const first = await learner.step(trajs);
    expect(Number.isFinite(first.loss) && Number.isFinite(first.gradNorm)).toBe(true);
    expect(first.clipFraction).toBeGreaterThanOrEqual(0);
    const after1 = tf.memory().numTensors;
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await learner.step(trajs));
    expect(tf.memory().numTensors).toBe(after1);
    // the learning rate follows the warm-up (2 steps), then the cosine
    expect(first.learningRate).toBeCloseTo(settings.learningRate / 2, 12);
    expect(results[0]?.learningRate).toBeCloseTo(settings.learningRate, 12);
    // the sampled KL (Σ_t k1 = 0.9 nats/sample) is above the 0.5 target: β ← β·(1 + 0.2·4/10) per step, saved
    const st = learner.getState();
    close(st.kl.beta, settings.klCoef * 1.08 ** 4, 1e-12);
    expect(results[2]?.klCoef).toBeLessThan(st.kl.beta);
    learner.setState(st);
    expect(learner.getState()).toEqual(st);
    // β and the baseline travel in the checkpoint metadata and come back on resume
    const saved = join(dirname(path), "resumed.safetensors");
    await learner.saveCheckpoint(saved, { step: "4" });
    learner.dispose();
    const resumed = await ReinforceLearner.fromCheckpoint(saved, settings, { resume: true });
    expect(resumed.getState()).toEqual(st);
    resumed.dispose();
    const fresh = await ReinforceLearner.fromCheckpoint(saved, settings);
    expect(fresh.getState().kl.beta).toBe(settings.klCoef);
    fresh.dispose();
  });
});

/**
 * REINFORCE on a 4-armed bandit (toy bigram "LM", V = 4, BOS = 3; arm 2 pays 1), 4 prompts × 4
 * samples per step, with the given baseline. Returns the final policy's arm probabilities.
 */
async function banditRun(
  kind: BaselineKind,
  off: { mode: "none" | "ppo-clip" | "truncated"; stale: number } = { mode: "none", stale: 1 },
): Promise<{ probs: number[]; maxClip: number }> {
  const V = 4;
  const BOS = 3;
  const w = tf.tidy(() =>
    tf.variable(tf.randomNormal([V, V], 0, 0.01, "float32", 5), true, `bandit-w-${kind}`),
  );
  const b = tf.tidy(() => tf.variable(tf.zeros([V]), true, `bandit-b-${kind}`));
  const forward = (tokens: tf.Tensor2D): tf.Tensor3D =>
    tf.tidy(() => {
      const [bsz, t] = tokens.shape;
      const x = tf.oneHot(tokens.reshape([-1]), V).cast("float32"); // [B·T, V]
      return tf.add(tf.matMul(x, w), b).reshape([bsz, t, V]) as tf.Tensor3D;
    });
  const rand = rng(11);
  const ma = new MovingAverageBaseline(0.9);
  const adam = new Adam({ learningRate: 0.1 });
  const cfg = { klCoef: 0, klEstimator: "k1" as const, entropyCoef: 0, maxGradNorm: 1, offPolicy: off.mode };
  let probs: number[] = [];
  let maxClip = 0;
  for (let step = 0; step < 80; step++) {
    // the behaviour policy is refreshed every `stale` steps (stale > 1: off-policy samples)
    if (step % off.stale === 0) {
      probs = Array.from(
        tf.tidy(() => tf.softmax(forward(tf.fill([1, 1], BOS, "int32") as tf.Tensor2D)).dataSync()),
      );
    }
    const groups: number[] = [];
    const traj = [];
    for (let i = 0; i < 16; i++) {
      let u = rand();
      let k = 0;
      while (k < V - 1 && u >= (probs[k] as number)) u -= probs[k++] as number;
      groups.push(Math.floor(i / 4));
      traj.push({
        promptTokens: [],
        completionTokens: [k],
        reward: k === 2 ? 1 : 0,
        refLogprobs: [-1.386],
        behaviourLogprobs: [Math.log(probs[k] as number)],
      });
    }
    const built = buildPgBatch(traj, {
      bosId: BOS,
      padId: BOS,
      vocabSize: V,
      gamma: 1,
      baseline: 0,
      advantages: (returns) => computeAdvantages(returns, groups, kind, ma.value),
    });
    ma.update(built.returns);
    const res = await trainStep(forward, [w, b], built.tokens, built.batch, cfg, adam);
    maxClip = Math.max(maxClip, res.clipFraction);
    disposePgBatch(built);
  }
  probs = Array.from(
    tf.tidy(() => tf.softmax(forward(tf.fill([1, 1], BOS, "int32") as tf.Tensor2D)).dataSync()),
  );
  adam.dispose();
  tf.dispose([w, b]);
  return { probs, maxClip };
}
