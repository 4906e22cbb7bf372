import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { klK1, klK3, klPenalizedRewards, klTensor } from "../services/core/src/learn/kl.js";
import { type PgBatch, reinforceLoss } from "../services/core/src/learn/reinforce.js";

beforeAll(async () => {
  await tf.setBackend("cpu");
});

describe("kl", () => {
  it("kl - k1 and k3 match hand values", () => {
    // log π = −1, log π_ref = −2: k1 = 1; r = e^{−1}, k3 = (e^{−1} − 1) − (−1) = e^{−1}
    expect(klK1(-1, -2)).toBe(1);
    expect(klK3(-1, -2)).toBeCloseTo(Math.exp(-1), 15);
    // log π = −2, log π_ref = −1: k1 = −1 (k1 can be negative); r = e, k3 = e − 2
    expect(klK1(-2, -1)).toBe(-1);
    expect(klK3(-2, -1)).toBeCloseTo(Math.E - 2, 15);
    // identical policies: both 0; k3 stays ≥ 0 near r = 1
    expect(klK3(-0.3, -0.3)).toBe(0);
    expect(klK3(-0.3, -0.3 + 1e-9)).toBeGreaterThanOrEqual(0);
  });

  it("kl - tensor estimators equal the number ones", () => {
    const lp = [-1, -2, -0.5, -3];
    const ref = [-2, -1, -0.5, -0.1];
    for (const est of ["k1", "k3"] as const) {
      const got = tf.tidy(() => klTensor(tf.tensor1d(lp), tf.tensor1d(ref), est).arraySync() as number[]);
      const want = lp.map((l, i) => (est === "k1" ? klK1(l, ref[i] as number) : klK3(l, ref[i] as number)));
      got.forEach((g, i) => {
        expect(g).toBeCloseTo(want[i] as number, 5);
      });
    }
  });

  it("kl - KL in the reward subtracts β·k1 per token", () => {
    expect(klPenalizedRewards([0, 1], [-1, -2], [-2, -2], 0.5)).toEqual([-0.5, 1]);
    expect(() => klPenalizedRewards([0], [-1, -2], [-2], 0.5)).toThrow(/lengths differ/);
  });

  it("kl - gradient of the KL term matches finite differences", () => {
    const zs = [
      [
        [0.3, -0.7, 1.1],
        [0.9, 0.2, -0.4],
      ],
    ];
    const batch: PgBatch = {
      actions: tf.tensor2d([[2, 0]], [1, 2], "int32"),
      mask: tf.tensor2d([[1, 1]]),
      advantages: tf.zeros([1, 2]) as tf.Tensor2D,
      refLogprobs: tf.tensor2d([[-1.4, -0.6]]),
    };
    for (const klEstimator of ["k1", "k3"] as const) {
      const cfg = { klCoef: 1, klEstimator, entropyCoef: 0 };
      const loss = (z: tf.Tensor) => reinforceLoss(z as tf.Tensor3D, batch, cfg).loss;
      const analytic = tf.tidy(() => tf.grad(loss)(tf.tensor3d(zs)).arraySync()) as number[][][];
      const eps = 1e-2;
      for (let t = 0; t < 2; t++) {
        for (let j = 0; j < 3; j++) {
          const at = (d: number) =>
            tf.tidy(() => {
              const shift = tf.buffer([1, 2, 3], "float32");
              shift.set(d, 0, t, j);
              return loss(tf.add(tf.tensor3d(zs), shift.toTensor())).dataSync()[0] as number;
            });
          const numeric = (at(eps) - at(-eps)) / (2 * eps);
          expect(analytic[0]?.[t]?.[j]).toBeCloseTo(numeric, 3);
        }
      }
    }
    tf.dispose(Object.values(batch));
  });
});
