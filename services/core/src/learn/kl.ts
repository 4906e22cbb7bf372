/**
 * Per-token KL estimators to the frozen reference policy, from sampled tokens.
 *
 * The exact KL(π_θ‖π_ref) at a state needs the whole vocabulary distribution of both models; the
 * Rollout service only stores the reference log-probability of the token that was sampled. With
 * a ~ π_θ and r = π_ref(a)/π_θ(a) (Schulman, "Approximating KL divergence", 2020):
 *   k1 = log π_θ(a) − log π_ref(a) = −log r          unbiased, high variance, can be negative
 *   k3 = (r − 1) − log r                             unbiased, ≥ 0, lower variance
 *
 * Gradient caveat, when the estimator is put in the *loss* and differentiated only through
 * log π_θ(a) of a token sampled from π_θ:
 *   ∇k1 = ∇log π_θ(a), whose expectation under a ~ π_θ is 0: k1 in the loss reports the KL but does
 *        not pull towards the reference on average (it only adds noise). Put k1 in the reward
 *        instead ({@link klPenalizedRewards}), where the policy gradient carries it correctly.
 *   ∇k3 = (1 − r)·∇log π_θ(a), whose expectation is ∇KL(π_ref‖π_θ): a proper pull towards the
 *        reference (the forward KL). Use k3 when the KL sits in the loss.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";

/** Which sampled-token KL estimator to use (see the module comment for their gradients). */
export type KlEstimator = "k1" | "k3";

/** k1 = log π_θ(a) − log π_ref(a), for one sampled token. */
export function klK1(logprob: number, refLogprob: number): number {
  return logprob - refLogprob;
}

/**
 * k3 = (r − 1) − log r with log r = log π_ref(a) − log π_θ(a), for one sampled token.
 * Computed as expm1(log r) − log r so that it stays accurate (and ≥ 0) when r ≈ 1.
 */
export function klK3(logprob: number, refLogprob: number): number {
  const logR = refLogprob - logprob;
  return Math.expm1(logR) - logR;
}

/** The chosen estimator for one sampled token. */
export function klEstimate(logprob: number, refLogprob: number, estimator: KlEstimator): number {
  return estimator === "k1" ? klK1(logprob, refLogprob) : klK3(logprob, refLogprob);
}

/** Element-wise k1 on tensors of log-probs (any equal shapes). Call inside tf.tidy. */
export function klK1Tensor(logprobs: tf.Tensor, refLogprobs: tf.Tensor): tf.Tensor {
  // k1 = log π_θ − log π_ref
  return tf.sub(logprobs, refLogprobs);
}

/** Element-wise k3 on tensors of log-probs (any equal shapes). Call inside tf.tidy. */
export function klK3Tensor(logprobs: tf.Tensor, refLogprobs: tf.Tensor): tf.Tensor {
  // log r = log π_ref − log π_θ
  const logR = tf.sub(refLogprobs, logprobs);
  // k3 = (r − 1) − log r = (exp(log r) − 1) − log r
  return tf.sub(tf.sub(tf.exp(logR), 1), logR);
}

/** Element-wise chosen estimator on tensors. Call inside tf.tidy. */
export function klTensor(logprobs: tf.Tensor, refLogprobs: tf.Tensor, estimator: KlEstimator): tf.Tensor {
  return estimator === "k1" ? klK1Tensor(logprobs, refLogprobs) : klK3Tensor(logprobs, refLogprobs);
}

/**
 * KL in the reward: r'_t = r_t − β·k1_t for each completion token (or k3_t when `estimator` is 'k3').
 *
 * Why: with the penalty inside the reward, the returns-to-go carry it and the policy gradient
 * optimises E[Σ r_t] − β·KL(π_θ‖π_ref) over whole sequences, which is the RLHF objective; k1 is
 * the right estimator here because only its value (not its gradient) is used.
 *
 * @param rewards r_t per completion token.
 * @param logprobs log π_θ(a_t) under the policy that sampled (behaviour log-probs).
 * @param refLogprobs log π_ref(a_t).
 * @param beta β ≥ 0.
 */
export function klPenalizedRewards(
  rewards: readonly number[],
  logprobs: readonly number[],
  refLogprobs: readonly number[],
  beta: number,
  estimator: KlEstimator = "k1",
): number[] {
  if (logprobs.length !== rewards.length || refLogprobs.length !== rewards.length) {
    throw new ValidationError(
      "logprobs",
      `lengths differ: rewards ${rewards.length}, logprobs ${logprobs.length}, refLogprobs ${refLogprobs.length}`,
    );
  }
  if (!Number.isFinite(beta) || beta < 0)
    throw new ValidationError("klCoef", `must be finite and ≥ 0, got ${beta}`);
  return rewards.map((r, t) => {
    const k = klEstimate(logprobs[t] as number, refLogprobs[t] as number, estimator);
    if (!Number.isFinite(k) || !Number.isFinite(r)) {
      throw new ValidationError(`rewards[${t}]`, "reward and log-probs must be finite");
    }
    // r'_t = r_t − β·KL_t  (KL_t = k1_t by default, or k3_t)
    return r - beta * k;
  });
}
