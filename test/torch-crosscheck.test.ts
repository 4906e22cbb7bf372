/**
 * Cross-check against an independent PyTorch implementation (test/python/reference.py, float64):
 * the REINFORCE loss (returns-to-go, baseline, KL k1/k3, entropy) and its gradient w.r.t. the
 * logits; the GPT's logits; the loss gradient w.r.t. every parameter; the weights after one
 * clipped AdamW step. Every quantity is computed here on the `cpu` and the `wasm` backends.
 *
 * Tolerance: 1e-5 relative, per tensor: max_i |ours_i − ref_i| / max_i |ref_i| (the error
 * relative to the tensor's scale; for a scalar, the plain relative error). Element by element,
 * entries far below their tensor's scale cannot be 1e-5-accurate in float32 (their absolute error
 * is set by the scale), and PyTorch's own float32 run misses float64 by as much there; the test
 * prints that element-wise figure (denominator max(|ref_i|, 1e-6·scale)) for us and for PyTorch
 * float32 side by side, and asserts the per-tensor one.
 *
 * Adam's first step is θ ← θ − α·g/(|g| + ε) (plus decay): where the true gradient is ~0 (the
 * attention key bias has an exactly zero gradient, softmax being shift-invariant) float32 noise
 * of 1e-9 moves a weight by ~α/10 in any float32 implementation. So the optimiser is checked
 * twice: on our own float32 gradients (every entry), and end to end against the float64 run on
 * the entries whose float64 gradient is 0 or ≥ 1e-5 of its tensor's largest (the count left out
 * is printed).
 *
 * The other estimators of services/core/src/learn/ (PPO-clip and truncated importance sampling with
 * their clip fraction, KL in the reward with k1/k3, each baseline, the moving-average baseline's
 * updates and adaptive β) are checked the same way: the reference builds the shaped rewards,
 * returns, advantages, surrogate, clip fraction and d loss/d logits from the equations, and the
 * rows of the printed table are named after the estimator.
 *
 * Needs `/usr/bin/python3` with Debian's python3-torch (see .ci/run); test/helpers/require-tool.ts
 * skips it with a warning when it is missing locally and fails the file when CI is set.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, describe, expect, it } from "vitest";
import type { BaselineKind } from "../services/core/src/config/settings.js";
import { Adam, clipByGlobalNorm } from "../services/core/src/learn/adam.js";
import { computeAdvantages } from "../services/core/src/learn/advantages.js";
import { MovingAverageBaseline } from "../services/core/src/learn/baseline.js";
import { type KlEstimator, klK1, klPenalizedRewards } from "../services/core/src/learn/kl.js";
import { KlController } from "../services/core/src/learn/kl-controller.js";
import type { OffPolicyMode } from "../services/core/src/learn/off-policy.js";
import { trainStep } from "../services/core/src/learn/optimizer.js";
import {
  buildPgBatch,
  disposePgBatch,
  type PgBatchOptions,
  type PgLossConfig,
  type PgTrajectory,
  reinforceLoss,
} from "../services/core/src/learn/reinforce.js";
import { returnsToGo, tokenRewards } from "../services/core/src/learn/returns.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { createTransformer } from "../services/core/src/model/transformer.js";
import type { TransformerConfig } from "../services/core/src/model/transformer-config.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";
import { rng } from "./helpers/uniform.js";

const SCRIPT = join(import.meta.dirname, "python", "reference.py");
const RTOL = 1e-5;
/** Entries of a gradient below this share of its tensor's largest are left out of the end-to-end Adam check. */
const ADAM_GRAD_FLOOR = 1e-5;
const BACKENDS = ["cpu", "wasm"] as const;

const hasTorch = requireTool(TOOLS.pythonTorch);

/** Standard normal draws (Box–Muller) from a uniform source. */
function normal(u: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

const VOCAB = 258;
const OPTIONS: PgBatchOptions = { bosId: 256, padId: 257, vocabSize: VOCAB, gamma: 0.9, baseline: 0.3 };

/** B random trajectories: prompts of 0–3 tokens, completions of 1–5, scalar or per-token rewards. */
function trajectories(seed: number, b: number): PgTrajectory[] {
  const u = rng(seed);
  const n = normal(u);
  const int = (k: number) => Math.floor(u() * k);
  return Array.from({ length: b }, (_, i) => {
    const prompt = Array.from({ length: int(4) }, () => int(256));
    const completion = Array.from({ length: 1 + int(5) }, () => int(256));
    const perToken = i % 2 === 1 ? completion.map(() => n()) : undefined;
    return {
      promptTokens: prompt,
      completionTokens: completion,
      reward: n(),
      ...(perToken ? { tokenRewards: perToken } : {}),
      refLogprobs: completion.map(() => -0.05 - 5 * u()),
    };
  });
}

interface RefArray {
  shape: number[];
  data: Float64Array;
}

/** Writes `case.json` (+ extra files) into a fresh dir, runs reference.py, reads its arrays. */
function runReference(
  caseJson: object,
  files: Record<string, Uint8Array>,
  dtype: "float64" | "float32" = "float64",
): Map<string, RefArray> {
  const dir = mkdtempSync(join(tmpdir(), "rlaif-torch-"));
  writeFileSync(join(dir, "case.json"), JSON.stringify(caseJson));
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  const r = spawnSync(PYTHON, [SCRIPT, dir], {
    encoding: "utf8",
    env: { ...process.env, OPENBLAS_NUM_THREADS: "1", OMP_NUM_THREADS: "1", REFERENCE_DTYPE: dtype },
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`reference.py failed (${r.status}): ${r.stderr}`);
  const index = JSON.parse(readFileSync(join(dir, "result.json"), "utf8")) as {
    arrays: Record<string, { shape: number[]; offset: number; length: number }>;
  };
  const bin = readFileSync(join(dir, "result.bin"));
  const all = new Float64Array(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength));
  const out = new Map<string, RefArray>();
  for (const [k, v] of Object.entries(index.arrays)) {
    out.set(k, { shape: v.shape, data: all.subarray(v.offset, v.offset + v.length) });
  }
  return out;
}

/** Errors of `ours` against `ref`: per tensor (asserted) and element-wise (printed). */
function errors(
  ours: ArrayLike<number>,
  ref: ArrayLike<number>,
  keep?: (i: number) => boolean,
): { tensor: number; element: number } {
  expect(ours.length).toBe(ref.length);
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i] as number));
  let maxDiff = 0;
  let element = 0;
  for (let i = 0; i < ref.length; i++) {
    if (keep && !keep(i)) continue;
    const r = ref[i] as number;
    const d = Math.abs((ours[i] as number) - r);
    if (!(d <= Number.MAX_VALUE))
      return { tensor: Number.POSITIVE_INFINITY, element: Number.POSITIVE_INFINITY };
    maxDiff = Math.max(maxDiff, d);
    if (d > 0) element = Math.max(element, d / Math.max(Math.abs(r), 1e-6 * scale));
  }
  return { tensor: scale === 0 ? (maxDiff === 0 ? 0 : Number.POSITIVE_INFINITY) : maxDiff / scale, element };
}

/** Worst errors per quantity and column (cpu, wasm, torch-f32), printed at the end. */
const report = new Map<string, Record<string, { tensor: number; element: number }>>();
function record(quantity: string, column: string, e: { tensor: number; element: number }): void {
  const row = report.get(quantity) ?? {};
  const old = row[column] ?? { tensor: 0, element: 0 };
  row[column] = { tensor: Math.max(old.tensor, e.tensor), element: Math.max(old.element, e.element) };
  report.set(quantity, row);
}

/** Records and asserts one quantity of one backend against the float64 reference. */
function check(
  quantity: string,
  backend: string,
  ours: ArrayLike<number>,
  ref: RefArray | undefined,
  keep?: (i: number) => boolean,
): void {
  if (ref === undefined) throw new Error(`reference.py returned no '${quantity}'`);
  const e = errors(ours, ref.data, keep);
  record(quantity, backend, e);
  expect(
    e.tensor,
    `${quantity} on ${backend}: relative error ${e.tensor.toExponential(2)}`,
  ).toBeLessThanOrEqual(RTOL);
}

/** Records (never asserts) PyTorch float32 against PyTorch float64: what float32 itself reaches. */
function recordTorch32(
  quantity: string,
  f32: RefArray | undefined,
  f64: RefArray | undefined,
  keep?: (i: number) => boolean,
): void {
  if (f32 === undefined || f64 === undefined) throw new Error(`reference.py returned no '${quantity}'`);
  record(quantity, "torch-f32", errors(f32.data, f64.data, keep));
}

/** Width of the quantity column of the printed table. */
const QUANTITY_WIDTH = 52;
const fmt = (x: number | undefined) => (x === undefined ? "   -    " : x.toExponential(2).padStart(8));
afterAll(() => {
  if (report.size === 0) return;
  const cols = [...BACKENDS, "torch-f32"];
  const lines = [...report].map(
    ([q, r]) =>
      `  ${q.padEnd(QUANTITY_WIDTH)}` +
      cols.map((c) => ` ${fmt(r[c]?.tensor)}`).join("") +
      "  |" +
      cols.map((c) => ` ${fmt(r[c]?.element)}`).join(""),
  );
  console.log(
    `torch-crosscheck: worst relative error vs PyTorch float64 (asserted: per tensor ≤ ${RTOL})\n` +
      `  ${"quantity".padEnd(QUANTITY_WIDTH)} per tensor: cpu, wasm, torch-f32 | element-wise: cpu, wasm, torch-f32\n` +
      lines.join("\n") +
      (adamLeftOut
        ? `\n  (end-to-end AdamW: ${adamLeftOut} entries with 0 < |g| < ${ADAM_GRAD_FLOOR}·max|g| of their tensor left out)`
        : ""),
  );
});
let adamLeftOut = "";

const LOSS_CONFIGS: { name: string; cfg: PgLossConfig }[] = [
  { name: "k3", cfg: { klCoef: 0.1, klEstimator: "k3", entropyCoef: 0.01 } },
  { name: "k1", cfg: { klCoef: 0.05, klEstimator: "k1", entropyCoef: 0.02 } },
];

describe.skipIf(!hasTorch)("PyTorch cross-check: REINFORCE loss on given logits", () => {
  for (const { name, cfg } of LOSS_CONFIGS) {
    it(`loss and d loss/d logits match (KL ${name})`, async () => {
      const trajs = trajectories(11, 5);
      const t = Math.max(...trajs.map((x) => x.promptTokens.length + x.completionTokens.length));
      const n = normal(rng(23));
      const logits = Float32Array.from({ length: trajs.length * t * VOCAB }, () => 2 * n());
      const caseJson = {
        kind: "logits",
        options: OPTIONS,
        trajectories: trajs,
        loss: cfg,
        logitsShape: [trajs.length, t, VOCAB],
      };
      const files = { "logits.f32": new Uint8Array(logits.buffer) };
      const ref = runReference(caseJson, files);
      const ref32 = runReference(caseJson, files, "float32");
      const quantities: [string, string][] = [
        ["loss", `loss[${name}] L`],
        ["pgLoss", `loss[${name}] L_pg`],
        ["kl", `loss[${name}] KL`],
        ["entropy", `loss[${name}] H`],
        ["dLogits", `loss[${name}] dL/dlogits`],
      ];
      for (const [k, q] of quantities) recordTorch32(q, ref32.get(k), ref.get(k));
      for (const backend of BACKENDS) {
        await initBackend(backend);
        expect(tf.getBackend()).toBe(backend);
        const built = buildPgBatch(trajs, OPTIONS);
        const z = tf.tensor3d(logits, [trajs.length, t, VOCAB]);
        const parts = reinforceLoss(z, built.batch, cfg);
        const grad = tf.grad((x: tf.Tensor) => reinforceLoss(x as tf.Tensor3D, built.batch, cfg).loss)(z);
        // the batch layout and A_t = R_t − b, built independently in Python
        check(
          "batch advantages R_t - b",
          backend,
          await built.batch.advantages.data(),
          ref.get("advantages"),
        );
        check("batch mask", backend, await built.batch.mask.data(), ref.get("mask"));
        for (const [k, q] of quantities) {
          const ours = k === "dLogits" ? await grad.data() : await parts[k as "loss"].data();
          check(q, backend, ours, ref.get(k));
        }
        tf.dispose([z, grad, ...Object.values(parts)]);
        disposePgBatch(built);
      }
    });
  }
});

const MODEL: TransformerConfig = { vocabSize: VOCAB, contextLength: 16, dModel: 32, nLayers: 2, nHeads: 4 };

/**
 * Weights with every parameter away from its trivial init (biases ≠ 0, gains ≠ 1) and logits of
 * order 1, so that each term of the loss and each gradient path carries weight.
 */
function randomWeights(seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const n = normal(rng(seed));
  const model = createTransformer(MODEL, 1);
  const out = model.getWeights();
  model.dispose();
  for (const [name, w] of out) {
    const isGain = name.includes("ln_") && name.endsWith(".weight");
    const std = name.endsWith(".bias")
      ? 0.1
      : isGain
        ? 0.1
        : name === "wte" || name === "wpe"
          ? 0.5
          : 1 / Math.sqrt(w.shape[0] as number);
    for (let i = 0; i < w.data.length; i++) w.data[i] = (isGain ? 1 : 0) + std * n();
  }
  return out;
}

/** A safetensors file (u64 LE header length, JSON header, F32 data), as the checkpoint layout. */
function safetensors(weights: Map<string, { shape: number[]; data: Float32Array }>): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, w] of weights) {
    header[name] = { dtype: "F32", shape: w.shape, data_offsets: [off, off + 4 * w.data.length] };
    off += 4 * w.data.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const hbytes = new TextEncoder().encode(json);
  const buf = new Uint8Array(8 + hbytes.length + off);
  new DataView(buf.buffer).setBigUint64(0, BigInt(hbytes.length), true);
  buf.set(hbytes, 8);
  let at = 8 + hbytes.length;
  for (const w of weights.values()) {
    buf.set(new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength), at);
    at += w.data.byteLength;
  }
  return buf;
}

type Weights = Map<string, { shape: number[]; data: Float32Array }>;

/** Loss gradient w.r.t. every parameter, by parameter name, on the current backend. */
function paramGrads(
  model: ReturnType<typeof createTransformer>,
  built: ReturnType<typeof buildPgBatch>,
  loss: PgLossConfig,
): Map<string, Float32Array> {
  const { value, grads } = tf.variableGrads(
    () => reinforceLoss(model.forward(built.tokens), built.batch, loss).loss,
    model.variables(),
  );
  const out = new Map<string, Float32Array>();
  for (const [name, v] of model.params) {
    const g = grads[v.name];
    out.set(name, g ? Float32Array.from(g.dataSync() as Float32Array) : new Float32Array(v.size));
  }
  tf.dispose([value, ...Object.values(grads)]);
  return out;
}

describe.skipIf(!hasTorch)("PyTorch cross-check: GPT forward, parameter gradients, AdamW step", () => {
  it("logits, loss, d loss/d every parameter and the weights after one clipped AdamW step match", async () => {
    const trajs = trajectories(5, 4);
    const weights: Weights = randomWeights(99);
    const paramOrder = [...weights.keys()];
    const loss: PgLossConfig = { klCoef: 0.1, klEstimator: "k3", entropyCoef: 0.01 };
    const adam = { learningRate: 1e-2, weightDecay: 0.1, decayMatricesOnly: true };
    // Our cpu gradients: their norm sets a clip threshold that really clips (×0.5), and they are
    // the input of the optimiser-only check.
    await initBackend("cpu");
    const cpuGrads = (() => {
      const m = createTransformer(MODEL, 1);
      m.setWeights(weights);
      const built = buildPgBatch(trajs, OPTIONS);
      const g = paramGrads(m, built, loss);
      disposePgBatch(built);
      m.dispose();
      return g;
    })();
    let sq = 0;
    for (const g of cpuGrads.values()) for (const x of g) sq += x * x;
    const maxGradNorm = 0.5 * Math.sqrt(sq);
    const caseJson = {
      kind: "model",
      options: OPTIONS,
      trajectories: trajs,
      loss,
      model: MODEL,
      paramOrder,
      train: { maxGradNorm },
      adam,
    };
    const files = { "weights.safetensors": safetensors(weights) };
    const ref = runReference(caseJson, files);
    const ref32 = runReference(caseJson, files, "float32");
    const flatGrads = new Float32Array(
      paramOrder.reduce((n, k) => n + (cpuGrads.get(k) as Float32Array).length, 0),
    );
    let off = 0;
    for (const k of paramOrder) {
      flatGrads.set(cpuGrads.get(k) as Float32Array, off);
      off += (cpuGrads.get(k) as Float32Array).length;
    }
    const refAdam = runReference(
      { ...caseJson, kind: "adam" },
      { ...files, "grads.f32": new Uint8Array(flatGrads.buffer) },
    );

    // Entries kept in the end-to-end Adam check: float64 gradient 0 or ≥ ADAM_GRAD_FLOOR·max of its tensor.
    const keepers = new Map<string, (i: number) => boolean>();
    let left = 0;
    let total = 0;
    for (const name of paramOrder) {
      const g = (ref.get(`grad/${name}`) as RefArray).data;
      let mx = 0;
      for (const x of g) mx = Math.max(mx, Math.abs(x));
      // exact zeros (rows of tokens and positions the batch never uses) stay in: no noise there
      const keep = (i: number) => g[i] === 0 || Math.abs(g[i] as number) >= ADAM_GRAD_FLOOR * mx;
      for (let i = 0; i < g.length; i++) if (!keep(i)) left++;
      total += g.length;
      keepers.set(name, keep);
    }
    adamLeftOut = `${left} of ${total}`;

    recordTorch32("model logits", ref32.get("logits"), ref.get("logits"));
    for (const k of ["loss", "pgLoss", "kl", "entropy", "gradNorm"])
      recordTorch32(`model ${k}`, ref32.get(k), ref.get(k));
    for (const name of paramOrder) {
      recordTorch32("dL/dparam (worst of all)", ref32.get(`grad/${name}`), ref.get(`grad/${name}`));
      recordTorch32(
        "weights after AdamW, end to end",
        ref32.get(`after/${name}`),
        ref.get(`after/${name}`),
        keepers.get(name),
      );
    }

    for (const backend of BACKENDS) {
      await initBackend(backend);
      expect(tf.getBackend()).toBe(backend);
      const model = createTransformer(MODEL, 1);
      model.setWeights(weights);
      const built = buildPgBatch(trajs, OPTIONS);
      const logits = model.forward(built.tokens);
      check("model logits", backend, await logits.data(), ref.get("logits"));
      const parts = reinforceLoss(logits, built.batch, loss);
      for (const k of ["loss", "pgLoss", "kl", "entropy"] as const) {
        check(`model ${k}`, backend, await parts[k].data(), ref.get(k));
      }
      tf.dispose([logits, ...Object.values(parts)]);
      const grads = paramGrads(model, built, loss);
      for (const name of paramOrder) {
        check("dL/dparam (worst of all)", backend, grads.get(name) as Float32Array, ref.get(`grad/${name}`));
      }
      // One product training step: gradients → global-norm clip → AdamW.
      const opt = new Adam(adam);
      const res = await trainStep(
        (x) => model.forward(x),
        model.variables(),
        built.tokens,
        built.batch,
        { ...loss, maxGradNorm },
        opt,
      );
      expect(res.applied).toBe(true);
      expect(res.gradNorm).toBeGreaterThan(maxGradNorm); // the clip was active
      check("model gradNorm", backend, [res.gradNorm], ref.get("gradNorm"));
      const after = model.getWeights();
      for (const name of paramOrder) {
        const ours = (after.get(name) as { data: Float32Array }).data;
        check("weights after AdamW, end to end", backend, ours, ref.get(`after/${name}`), keepers.get(name));
      }
      opt.dispose();
      disposePgBatch(built);
      model.dispose();

      // The optimiser alone, on our cpu float32 gradients (every entry): clip + AdamW.
      const vars = paramOrder.map((name) => {
        const w = weights.get(name) as { shape: number[]; data: Float32Array };
        return tf.variable(tf.tensor(w.data, w.shape, "float32"), true, `crosscheck-${backend}/${name}`);
      });
      const gs = paramOrder.map((name, i) => tf.tensor(cpuGrads.get(name) as Float32Array, vars[i]?.shape));
      const { clipped, globalNorm } = clipByGlobalNorm(gs, maxGradNorm);
      check("AdamW on given grads: norm", backend, await globalNorm.data(), refAdam.get("gradNorm"));
      const opt2 = new Adam(adam);
      opt2.applyGradients(vars, clipped);
      for (const [i, name] of paramOrder.entries()) {
        check(
          "AdamW on given grads: weights",
          backend,
          await (vars[i] as tf.Variable).data(),
          refAdam.get(`after/${name}`),
        );
      }
      opt2.dispose();
      tf.dispose([...vars, ...gs, ...clipped, globalNorm]);
    }
  });
});

/** One estimator configuration of the learner, as the Optimizer's run settings select it. */
interface EstimatorCase {
  name: string;
  baseline: BaselineKind;
  movingAverage: number;
  klIn: "reward" | "loss";
  klCoef: number;
  klEstimator: KlEstimator;
  entropyCoef: number;
  offPolicy: OffPolicyMode;
  clipEpsilon: number;
  truncation: number;
}

const EST_DEFAULTS = { movingAverage: 0, clipEpsilon: 0.2, truncation: 1, entropyCoef: 0 };
/** Each row of the README's estimator table at least once (KL k1/k3 in the loss are also above). */
const ESTIMATORS: EstimatorCase[] = [
  {
    ...EST_DEFAULTS,
    name: "PPO-clip ε0.2, group, k3 in loss, H",
    baseline: "group",
    klIn: "loss",
    klCoef: 0.1,
    klEstimator: "k3",
    entropyCoef: 0.01,
    offPolicy: "ppo-clip",
  },
  {
    ...EST_DEFAULTS,
    name: "PPO-clip ε0.1, batch, k1 in reward",
    baseline: "batch",
    klIn: "reward",
    klCoef: 0.05,
    klEstimator: "k1",
    offPolicy: "ppo-clip",
    clipEpsilon: 0.1,
  },
  {
    ...EST_DEFAULTS,
    name: "truncated c1, rloo, k3 in reward, H",
    baseline: "rloo",
    klIn: "reward",
    klCoef: 0.1,
    klEstimator: "k3",
    entropyCoef: 0.02,
    offPolicy: "truncated",
    truncation: 1,
  },
  {
    ...EST_DEFAULTS,
    name: "truncated c1.3, moving-avg, k1 in loss",
    baseline: "moving-average",
    movingAverage: 0.25,
    klIn: "loss",
    klCoef: 0.05,
    klEstimator: "k1",
    entropyCoef: 0.01,
    offPolicy: "truncated",
    truncation: 1.3,
  },
  {
    ...EST_DEFAULTS,
    name: "on-policy, no baseline, k1 in reward",
    baseline: "none",
    klIn: "reward",
    klCoef: 0.2,
    klEstimator: "k1",
    offPolicy: "none",
  },
];

/** Ratio bounds of the configurations above: ρ is kept ≥ 0.01 away from each (no float32 tie). */
const RHO_EDGES = [0.8, 0.9, 1, 1.1, 1.2, 1.3];

/** log-softmax in float64 of one position's float32 logits. */
function logSoftmax64(z: Float32Array): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (const x of z) max = Math.max(max, x);
  let sum = 0;
  for (const x of z) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(z, (x) => x - lse);
}

describe.skipIf(!hasTorch)("PyTorch cross-check: off-policy corrections, KL in the reward, baselines", () => {
  it("every estimator's advantages, loss parts, clip fraction and d loss/d logits match", async () => {
    // Groups of 3, 2 and 3 samples (a singleton group would make GRPO's std 0; see advantages.ts).
    const groupIds = [0, 0, 0, 1, 1, 2, 2, 2];
    const base = trajectories(31, groupIds.length);
    const t = Math.max(...base.map((x) => x.promptTokens.length + x.completionTokens.length));
    const n = normal(rng(37));
    const logits = Float32Array.from({ length: base.length * t * VOCAB }, () => 2 * n());
    // Behaviour log-probs: the policy's own log π(a) (from these logits) minus noise, so that
    // ρ = π/π_behaviour spreads over 0.5..2 (some ratios clipped on each side, some truncated)
    // while staying clear of every clip edge; float32 values so both sides read the same inputs.
    const u = rng(41);
    const noise = normal(u);
    const trajs = base.map((tr, i) => {
      const behaviourLogprobs = tr.completionTokens.map((a, k) => {
        const at = (i * t + tr.promptTokens.length + k) * VOCAB;
        const lp = logSoftmax64(logits.subarray(at, at + VOCAB))[a] as number;
        let d = 0.35 * noise();
        while (RHO_EDGES.some((e) => Math.abs(Math.exp(d) - e) < 0.01)) d += 0.013;
        return Math.fround(lp - d); // ρ = exp(d)
      });
      return {
        ...tr,
        refLogprobs: tr.refLogprobs.map((x) => Math.fround(x)),
        behaviourLogprobs,
        groupId: groupIds[i] as number,
      };
    });
    const caseJson = {
      kind: "estimators",
      options: OPTIONS,
      trajectories: trajs,
      estimators: ESTIMATORS,
      logitsShape: [trajs.length, t, VOCAB],
    };
    const files = { "logits.f32": new Uint8Array(logits.buffer) };
    const ref = runReference(caseJson, files);
    const ref32 = runReference(caseJson, files, "float32");
    const parts: [string, string][] = [
      ["advantages", "A_t"],
      ["loss", "L"],
      ["pgLoss", "L_pg"],
      ["kl", "KL"],
      ["entropy", "H"],
      ["clipFraction", "clip fraction"],
      ["dLogits", "dL/dlogits"],
    ];
    for (const est of ESTIMATORS) {
      for (const [k, label] of parts)
        recordTorch32(`${est.name}: ${label}`, ref32.get(`${est.name}/${k}`), ref.get(`${est.name}/${k}`));
    }
    let clippedSomewhere = 0;
    for (const backend of BACKENDS) {
      await initBackend(backend);
      expect(tf.getBackend()).toBe(backend);
      for (const est of ESTIMATORS) {
        // What the learner does: r_t (scalar on the last token), minus β·KL_t when the KL is in the
        // reward; returns-to-go; A_t from the configured baseline; the loss with the correction.
        const pg = trajs.map((tr) => {
          const r = tokenRewards(tr.completionTokens.length, tr.reward, tr.tokenRewards);
          return {
            ...tr,
            tokenRewards:
              est.klIn === "reward"
                ? klPenalizedRewards(r, tr.behaviourLogprobs, tr.refLogprobs, est.klCoef, est.klEstimator)
                : r,
          };
        });
        const built = buildPgBatch(pg, {
          ...OPTIONS,
          baseline: 0,
          advantages: (returns) => computeAdvantages(returns, groupIds, est.baseline, est.movingAverage),
        });
        const cfg: PgLossConfig = {
          klCoef: est.klIn === "loss" ? est.klCoef : 0,
          klEstimator: est.klEstimator,
          entropyCoef: est.entropyCoef,
          offPolicy: est.offPolicy,
          clipEpsilon: est.clipEpsilon,
          truncation: est.truncation,
        };
        const z = tf.tensor3d(logits, [trajs.length, t, VOCAB]);
        const out = reinforceLoss(z, built.batch, cfg);
        const grad = tf.grad((x: tf.Tensor) => reinforceLoss(x as tf.Tensor3D, built.batch, cfg).loss)(z);
        check(
          `${est.name}: A_t`,
          backend,
          await built.batch.advantages.data(),
          ref.get(`${est.name}/advantages`),
        );
        for (const [k, label] of parts.slice(1)) {
          const ours = k === "dLogits" ? await grad.data() : await out[k as "loss"].data();
          check(`${est.name}: ${label}`, backend, ours, ref.get(`${est.name}/${k}`));
        }
        const frac = (await out.clipFraction.data())[0] as number;
        if (est.offPolicy !== "none") {
          // the correction really acted on some tokens and left others alone
          expect(frac, est.name).toBeGreaterThan(0);
          expect(frac, est.name).toBeLessThan(1);
          clippedSomewhere++;
        }
        tf.dispose([z, grad, ...Object.values(out)]);
        disposePgBatch(built);
      }
    }
    expect(clippedSomewhere).toBe(2 * ESTIMATORS.filter((e) => e.offPolicy !== "none").length);
  });

  it("the moving-average baseline over a series of batches and adaptive β over a series of KLs match", () => {
    const u = rng(53);
    const n = normal(u);
    // Return batches of different sizes and scales (and one with no tokens, which changes nothing).
    const returnBatches = [3, 5, 0, 2, 4, 6].map((rows, j) =>
      Array.from({ length: rows }, () =>
        returnsToGo(
          Array.from({ length: 1 + Math.floor(u() * 5) }, () => (j + 1) * n()),
          0.95,
        ),
      ),
    );
    // KL batches whose per-sample KL sits below, near and far above the target (both clips of e).
    const klController = { beta: 0.1, target: 2, horizon: 40 };
    const klBatches = [0.3, 1.9, 2.2, 8, 0.05, 3].map((scale) =>
      Array.from({ length: 4 + Math.floor(u() * 5) }, () => {
        const c = 1 + Math.floor(u() * 5);
        const behaviourLogprobs = Array.from({ length: c }, () => -0.1 - 4 * u());
        const refLogprobs = behaviourLogprobs.map((b) => b - scale * (0.2 + 0.6 * u()));
        return { behaviourLogprobs, refLogprobs };
      }),
    );
    const decay = 0.8;
    const ref = runReference(
      { kind: "sequences", baselineDecay: decay, returnBatches, klController, klBatches },
      {},
    );
    const ma = new MovingAverageBaseline(decay);
    const bs = returnBatches.map((batch) => ma.update(batch));
    check("moving-average b after each batch (JS f64)", "cpu", bs, ref.get("movingAverage"));
    const ctl = new KlController(klController.beta, klController.target, klController.horizon);
    const kls: number[] = [];
    const betas = klBatches.map((batch) => {
      const kl =
        batch.reduce(
          (s, smp) =>
            s + smp.behaviourLogprobs.reduce((a, lb, k) => a + klK1(lb, smp.refLogprobs[k] as number), 0),
          0,
        ) / batch.length;
      kls.push(kl);
      return ctl.update(kl, batch.length);
    });
    check("adaptive β: batch KL/sample (JS f64)", "cpu", kls, ref.get("batchKl"));
    check("adaptive β: β after each batch (JS f64)", "cpu", betas, ref.get("beta"));
    // the series moved β both ways, and hit the ±0.2 clip of e
    const ratios = betas.map((b, i) => b / (i === 0 ? klController.beta : (betas[i - 1] as number)));
    expect(Math.min(...ratios)).toBeLessThan(1);
    expect(Math.max(...ratios)).toBeGreaterThan(1);
    expect(
      ratios.some(
        (r, i) => Math.abs(r - (1 + (0.2 * (klBatches[i]?.length ?? 0)) / klController.horizon)) < 1e-12,
      ),
    ).toBe(true);
  });
});
