/**
 * The Bradley–Terry preference loss a reward model is trained with (reward-head.ts): the
 * probability that the chosen completion beats the rejected one is σ(r(chosen) − r(rejected)),
 * and the loss is its mean negative log-likelihood over the pairs. Apart from the model so the
 * gradient check (test/reward-model.test.ts) differentiates exactly the function training uses.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";

/**
 * L = −(1/N) Σ_i log σ(r_c,i − r_r,i) for rewards of the chosen and rejected completions of N
 * pairs, written as softplus(−Δ) so a large margin neither overflows nor loses precision.
 */
export function bradleyTerryLoss(chosen: tf.Tensor1D, rejected: tf.Tensor1D): tf.Scalar {
  if (chosen.rank !== 1 || rejected.rank !== 1 || chosen.shape[0] !== rejected.shape[0]) {
    throw new ValidationError(
      "rejected",
      `must be [N] like chosen [${chosen.shape}], got [${rejected.shape}]`,
    );
  }
  return tf.tidy(() => {
    // Δ_i = r_c,i − r_r,i
    const margin = tf.sub(chosen, rejected); // [N]
    // −log σ(Δ) = log(1 + e^−Δ) = softplus(−Δ)
    const nll = tf.softplus(tf.neg(margin)); // [N]
    // L = (1/N) Σ_i softplus(−Δ_i)
    return tf.mean(nll) as tf.Scalar; // []
  });
}

/** Share of pairs whose chosen reward is strictly above the rejected one (pairwise accuracy). */
export function pairwiseAccuracy(chosen: readonly number[], rejected: readonly number[]): number {
  if (chosen.length === 0) return Number.NaN;
  let right = 0;
  chosen.forEach((c, i) => {
    if (c > (rejected[i] as number)) right++;
  });
  return right / chosen.length;
}
