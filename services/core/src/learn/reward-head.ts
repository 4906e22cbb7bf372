/**
 * The scalar head of a reward model and its Bradley–Terry training on frozen backbone features
 * (model/reward-features.ts): r(x) = w · (f(x) − μ) / σ, with μ, σ the per-feature mean and
 * standard deviation of the training completions. Why a frozen backbone and a linear head: the
 * features of every labelled completion are computed once (one inference pass each), after which
 * an epoch costs a few small matrix products, so a reward model trains in seconds on two cores
 * from any backbone the project loads, and the head cannot forget the backbone's language.
 * The standardisation makes one learning rate fit every backbone (logit scales differ by kind).
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import { Rng } from "../model/rng.js";
import { Adam } from "./adam.js";
import { bradleyTerryLoss, pairwiseAccuracy } from "./bradley-terry.js";

/** The head: standardisation and weights (length D each); bias-free, since BT ignores a shift. */
export interface RewardHead {
  mean: Float32Array;
  scale: Float32Array;
  weight: Float32Array;
}

/** Features of labelled pairs: chosen[i] was preferred to rejected[i]. */
export interface PairFeatures {
  chosen: Float32Array[];
  rejected: Float32Array[];
}

/** How the head trains. */
export interface HeadTrainOptions {
  epochs: number;
  learningRate: number;
  /** AdamW decay λ: keeps w small where a few hundred pairs meet hundreds of features. */
  weightDecay: number;
  /** Pairs per update. */
  batchSize: number;
  /** Seed of the pair order of each epoch. */
  seed: number;
  /** Called after each epoch with its mean loss and the pairwise accuracies (held-out NaN when there are none). */
  onEpoch?: (epoch: number, loss: number, trainAccuracy: number, heldOutAccuracy: number) => void;
}

/** Defaults: measured on labels of the rule scorer from the byte models (docs/reward-model.md). */
export const DEFAULT_HEAD_TRAINING: Omit<HeadTrainOptions, "onEpoch"> = {
  epochs: 30,
  learningRate: 0.01,
  weightDecay: 0.3,
  batchSize: 32,
  seed: 1,
};

/** Heads trained in this process (tfjs variable names must be unique). */
let heads = 0;

/** Rewards of feature vectors under `head`: r = Σ_d w_d·(f_d − μ_d)/σ_d. */
export function headRewards(head: RewardHead, features: readonly Float32Array[]): number[] {
  return features.map((f) => {
    let r = 0;
    for (let d = 0; d < f.length; d++)
      r +=
        (head.weight[d] as number) *
        (((f[d] as number) - (head.mean[d] as number)) / (head.scale[d] as number));
    return r;
  });
}

/** μ and σ over the rows (σ floored at 1e-6 so a constant feature gives 0, not NaN). */
function standardisation(rows: readonly Float32Array[]): { mean: Float32Array; scale: Float32Array } {
  const d = (rows[0] as Float32Array).length;
  const mean = new Float32Array(d);
  const scale = new Float32Array(d);
  for (const r of rows)
    for (let j = 0; j < d; j++) mean[j] = (mean[j] as number) + (r[j] as number) / rows.length;
  for (const r of rows)
    for (let j = 0; j < d; j++)
      scale[j] = (scale[j] as number) + ((r[j] as number) - (mean[j] as number)) ** 2 / rows.length;
  for (let j = 0; j < d; j++) scale[j] = Math.max(Math.sqrt(scale[j] as number), 1e-6);
  return { mean, scale };
}

/** Standardised rows as one [N, D] tensor. */
function standardised(rows: readonly Float32Array[], mean: Float32Array, scale: Float32Array): tf.Tensor2D {
  const d = mean.length;
  const data = new Float32Array(rows.length * d);
  rows.forEach((r, i) => {
    for (let j = 0; j < d; j++)
      data[i * d + j] = ((r[j] as number) - (mean[j] as number)) / (scale[j] as number);
  });
  return tf.tensor2d(data, [rows.length, d]);
}

/**
 * Trains the head on `train` with the Bradley–Terry loss (AdamW, shuffled mini-batches), starting
 * from w = 0 (every pair a coin flip), and reports each epoch's accuracy on `train` and `heldOut`.
 */
export function trainRewardHead(train: PairFeatures, heldOut: PairFeatures, o: HeadTrainOptions): RewardHead {
  const n = train.chosen.length;
  if (n === 0 || train.rejected.length !== n)
    throw new ValidationError("labels", `need at least one training pair, got ${n}`);
  const { mean, scale } = standardisation([...train.chosen, ...train.rejected]);
  const d = mean.length;
  const xc = standardised(train.chosen, mean, scale); // [N, D]
  const xr = standardised(train.rejected, mean, scale); // [N, D]
  const w = tf.variable(tf.zeros([d, 1]), true, `reward-head-${heads++}`); // [D, 1]
  const adam = new Adam({ learningRate: o.learningRate, weightDecay: o.weightDecay });
  const rng = new Rng(o.seed, 0x726d);
  const head = (): RewardHead => ({ mean, scale, weight: Float32Array.from(w.dataSync() as Float32Array) });
  try {
    for (let epoch = 1; epoch <= o.epochs; epoch++) {
      const order = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.nextInt(i + 1);
        [order[i], order[j]] = [order[j] as number, order[i] as number];
      }
      let lossSum = 0;
      for (let s = 0; s < n; s += o.batchSize) {
        const idx = tf.tensor1d(order.slice(s, s + o.batchSize), "int32"); // [b]
        const { value, grads } = tf.variableGrads(() =>
          bradleyTerryLoss(
            // r_c = x̂_c·w, r_r = x̂_r·w
            tf.matMul(tf.gather(xc, idx), w).reshape([-1]) as tf.Tensor1D, // [b]
            tf.matMul(tf.gather(xr, idx), w).reshape([-1]) as tf.Tensor1D, // [b]
          ),
        );
        lossSum += (value.dataSync()[0] as number) * (idx.shape[0] as number);
        adam.applyGradients([w], [grads[w.name] ?? null]);
        tf.dispose([idx, value, ...Object.values(grads)]);
      }
      if (o.onEpoch) {
        const h = head();
        const acc = (p: PairFeatures) =>
          pairwiseAccuracy(headRewards(h, p.chosen), headRewards(h, p.rejected));
        o.onEpoch(epoch, lossSum / n, acc(train), heldOut.chosen.length > 0 ? acc(heldOut) : Number.NaN);
      }
    }
    return head();
  } finally {
    adam.dispose();
    tf.dispose([xc, xr, w]);
  }
}
