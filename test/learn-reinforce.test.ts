import { createRequire } from "node:module";
import { dirname } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import type { KlEstimator } from "../services/core/src/learn/kl.js";
import {
  buildPgBatch,
  disposePgBatch,
  type PgBatch,
  reinforceLoss,
} from "../services/core/src/learn/reinforce.js";

const require = createRequire(import.meta.url);

beforeAll(() => {
  setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"))}/`);
});

// Tiny case: B = 2, T = 2, V = 3; position (1, 1) is masked and carries junk that must not matter.
const Z = [
  [
    [0.5, -1.0, 2.0],
    [0.1, 0.2, -0.3],
  ],
  [
    [1.5, 0.0, -0.5],
    [-2.0, 1.0, 0.3],
  ],
];
const ACTIONS = [
  [2, 0],
  [1, 1],
];
const MASK = [
  [1, 1],
  [1, 0],
];
const ADV = [
  [1.5, -0.5],
  [2.0, 7.0],
];
const REF = [
  [-1.2, -0.9],
  [-1.5, -80],
];

interface Hand {
  loss: number;
  pg: number;
  kl: number;
  entropy: number;
  grad: number[][][];
}

/**
 * The loss and ∂L/∂z by hand: with p = softmax(z), δ_j = 1[j = a_t], N = Σ mask,
 *   ∂L/∂z_{t,j} = (m_t/N)·[ −A_t(δ_j − p_j) + β·κ'_t(δ_j − p_j) + c·p_j(log p_j + H_t) ],
 * κ' = 1 for k1 and 1 − r_t for k3 (r_t = π_ref/π_θ), H_t = −Σ_j p_j log p_j.
 */
function byHand(beta: number, est: KlEstimator, c: number, mask = MASK): Hand {
  const n = mask.flat().reduce((a, b) => a + b, 0);
  let pg = 0;
  let kl = 0;
  let entropy = 0;
  const grad = Z.map((row, b) =>
    row.map((z, t) => {
      const m = mask[b]?.[t] as number;
      const a = ACTIONS[b]?.[t] as number;
      const adv = ADV[b]?.[t] as number;
      const lse = Math.log(z.reduce((s, x) => s + Math.exp(x), 0));
      const logp = z.map((x) => x - lse);
      const p = logp.map(Math.exp);
      const lpa = logp[a] as number;
      const logR = (REF[b]?.[t] as number) - lpa;
      const k = est === "k1" ? -logR : Math.expm1(logR) - logR;
      const dk = est === "k1" ? 1 : 1 - Math.exp(logR);
      const h = -p.reduce((s, pj, j) => s + pj * (logp[j] as number), 0);
      pg += (-m * lpa * adv) / n;
      kl += (m * k) / n;
      entropy += (m * h) / n;
      return p.map((pj, j) => {
        const d = (j === a ? 1 : 0) - pj;
        return (m / n) * (-adv * d + beta * dk * d + c * pj * ((logp[j] as number) + h));
      });
    }),
  );
  return { loss: pg + beta * kl - c * entropy, pg, kl, entropy, grad };
}

function makeBatch(mask = MASK): PgBatch {
  return {
    actions: tf.tensor2d(ACTIONS, [2, 2], "int32"),
    mask: tf.tensor2d(mask),
    advantages: tf.tensor2d(ADV),
    refLogprobs: tf.tensor2d(REF),
  };
}

/** Loss parts and ∂L/∂z computed by tfjs on the current backend. */
function byTf(beta: number, est: KlEstimator, c: number, mask = MASK): Hand {
  const batch = makeBatch(mask);
  const cfg = { klCoef: beta, klEstimator: est, entropyCoef: c };
  const z = tf.tensor3d(Z);
  const out = reinforceLoss(z, batch, cfg);
  const grad = tf.grad((x: tf.Tensor) => reinforceLoss(x as tf.Tensor3D, batch, cfg).loss)(z);
  const res = {
    loss: out.loss.dataSync()[0] as number,
    pg: out.pgLoss.dataSync()[0] as number,
    kl: out.kl.dataSync()[0] as number,
    entropy: out.entropy.dataSync()[0] as number,
    grad: grad.arraySync() as number[][][],
  };
  tf.dispose([z, grad, ...Object.values(out), ...Object.values(batch)]);
  return res;
}

function expectClose(got: Hand, want: Hand, digits: number): void {
  for (const k of ["loss", "pg", "kl", "entropy"] as const) expect(got[k], k).toBeCloseTo(want[k], digits);
  got.grad.flat(2).forEach((g, i) => {
    expect(g, `grad[${i}]`).toBeCloseTo(want.grad.flat(2)[i] as number, digits);
  });
}

const CASES: [number, KlEstimator, number][] = [
  [0, "k1", 0],
  [0.1, "k1", 0.01],
  [0.3, "k3", 0.05],
];

describe("reinforce", () => {
  it("reinforce - loss and logit gradient match the hand computation on cpu and wasm", async () => {
    const results: Record<string, Hand[]> = {};
    for (const backend of ["cpu", "wasm"]) {
      expect(await tf.setBackend(backend)).toBe(true);
      results[backend] = CASES.map(([beta, est, c]) => {
        const got = byTf(beta, est, c);
        expectClose(got, byHand(beta, est, c), 5);
        return got;
      });
    }
    // both backends agree with each other, not just with the hand values
    results.cpu?.forEach((h, i) => {
      expectClose(h, results.wasm?.[i] as Hand, 5);
    });
    await tf.setBackend("cpu");
  });

  it("reinforce - masked positions contribute nothing", async () => {
    await tf.setBackend("cpu");
    // (1, 1) is masked and holds A = 7, log π_ref = −80: the loss is the hand one without it, its gradient row is 0
    const got = byTf(0.2, "k3", 0.1);
    expectClose(got, byHand(0.2, "k3", 0.1), 5);
    expect(got.grad[1]?.[1]).toEqual([0, 0, 0]);
    // everything masked: zero loss and zero gradient, not NaN
    const none = byTf(0.2, "k3", 0.1, [
      [0, 0],
      [0, 0],
    ]);
    expect(none.loss).toBe(0);
    expect(none.grad.flat(2).every((g) => g === 0)).toBe(true);
  });

  it("reinforce - shape mismatches are a ValidationError", async () => {
    await tf.setBackend("cpu");
    const batch = makeBatch();
    const z = tf.zeros([2, 3, 3]) as tf.Tensor3D;
    expect(() => reinforceLoss(z, batch, { klCoef: 0, klEstimator: "k1", entropyCoef: 0 })).toThrow(
      ValidationError,
    );
    tf.dispose([z, ...Object.values(batch)]);
  });

  it("reinforce - buildPgBatch lays out tokens, actions, mask and advantages", async () => {
    await tf.setBackend("cpu");
    const built = buildPgBatch(
      [
        { promptTokens: [10, 11], completionTokens: [20, 21, 22], reward: 1, refLogprobs: [-1, -2, -3] },
        { promptTokens: [], completionTokens: [30], reward: 5, tokenRewards: [2], refLogprobs: [-0.5] },
      ],
      { bosId: 256, padId: 257, vocabSize: 258, gamma: 0.5, baseline: 0.25 },
    );
    expect(built.tokens.arraySync()).toEqual([
      [256, 10, 11, 20, 21],
      [256, 257, 257, 257, 257],
    ]);
    expect(built.batch.actions.arraySync()).toEqual([
      [10, 11, 20, 21, 22],
      [30, 257, 257, 257, 257],
    ]);
    expect(built.batch.mask.arraySync()).toEqual([
      [0, 0, 1, 1, 1],
      [1, 0, 0, 0, 0],
    ]);
    // rewards [0, 0, 1], γ = 0.5 → R = [0.25, 0.5, 1]; A = R − 0.25
    expect(built.returns).toEqual([[0.25, 0.5, 1], [2]]);
    expect(built.batch.advantages.arraySync()).toEqual([
      [0, 0, 0, 0.25, 0.75],
      [1.75, 0, 0, 0, 0],
    ]);
    expect(built.batch.refLogprobs.arraySync()).toEqual([
      [0, 0, -1, -2, -3],
      [-0.5, 0, 0, 0, 0],
    ]);
    expect(built.numTokens).toBe(4);
    disposePgBatch(built);
  });

  it("reinforce - buildPgBatch rejects bad trajectories", () => {
    const opts = { bosId: 256, padId: 257, vocabSize: 258, gamma: 1, baseline: 0 };
    const ok = { promptTokens: [1], completionTokens: [2], reward: 1, refLogprobs: [-1] };
    expect(() => buildPgBatch([{ ...ok, completionTokens: [300] }], opts)).toThrow(/token id/);
    expect(() => buildPgBatch([{ ...ok, refLogprobs: [] }], opts)).toThrow(/refLogprobs/);
    expect(() => buildPgBatch([{ ...ok, completionTokens: [], refLogprobs: [] }], opts)).toThrow(
      ValidationError,
    );
    expect(() => buildPgBatch([ok], { ...opts, contextLength: 1 })).toThrow(/context length/);
    expect(() => buildPgBatch([], opts)).toThrow(ValidationError);
  });
});
