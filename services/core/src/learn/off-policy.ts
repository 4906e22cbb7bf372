/**
 * The per-token policy-gradient surrogate s_t, with or without an importance-ratio correction for
 * samples drawn by an older policy π_behaviour (the weights version that sampled them):
 *
 *   ρ_t = π_θ(a_t|s_t) / π_behaviour(a_t|s_t) = exp(log π_θ − log π_behaviour)
 *
 *   none:      s_t = log π_θ(a_t)·A_t                          ∇s_t = A_t·∇log π_θ (REINFORCE)
 *   ppo-clip:  s_t = min(ρ_t·A_t, clip(ρ_t, 1−ε, 1+ε)·A_t)     (Schulman et al. 2017)
 *              ∇s_t = ρ_t·A_t·∇log π_θ, or 0 where the clipped term is the smaller one
 *   truncated: s_t = sg(min(ρ_t, c))·A_t·log π_θ(a_t)          (truncated IS, as in IMPALA's ρ̄)
 *              ∇s_t = min(ρ_t, c)·A_t·∇log π_θ
 *
 * Truncated: the weight is a stop-gradient constant, so the estimator is the importance-weighted
 * REINFORCE gradient with the weight capped at c; tokens with ρ > c still learn, with weight c
 * (bounded variance, a bias towards π_behaviour). Without the stop-gradient, min(ρ, c)·A would give
 * those tokens no gradient at all, which is PPO's one-sided behaviour and not what truncation means.
 * On-policy (ρ = 1) ppo-clip and truncated (c ≥ 1) give exactly the REINFORCE gradient.
 *
 * Clip fraction: the share of completion tokens the correction touched — ppo-clip: the clipped
 * term was strictly the smaller (those tokens give zero gradient; TRL's `clipfrac`); truncated:
 * ρ_t > c.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";

/** Which correction. */
export type OffPolicyMode = "none" | "ppo-clip" | "truncated";

/** Settings of the correction. */
export interface OffPolicyConfig {
  /** Which correction (default none). */
  offPolicy?: OffPolicyMode;
  /** ε of the PPO clip, in (0, 1) (default 0.2). */
  clipEpsilon?: number;
  /** c of the truncation, ≥ 1 would keep on-policy exact (default 1). */
  truncation?: number;
}

/** Checks an {@link OffPolicyConfig}. */
export function checkOffPolicy(cfg: OffPolicyConfig): void {
  const mode = cfg.offPolicy ?? "none";
  if (!["none", "ppo-clip", "truncated"].includes(mode))
    throw new ValidationError("offPolicy", `must be none, ppo-clip or truncated, got ${String(mode)}`);
  const eps = cfg.clipEpsilon ?? 0.2;
  if (!(eps > 0 && eps < 1)) throw new ValidationError("clipEpsilon", `must be in (0, 1), got ${eps}`);
  const c = cfg.truncation ?? 1;
  if (!(c > 0 && Number.isFinite(c))) throw new ValidationError("truncation", `must be > 0, got ${c}`);
}

/** x forward, 0 backward: tfjs has no tf.stopGradient. */
const stopGradient = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  return { value: tf.mul(x, 1), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
}) as (x: tf.Tensor) => tf.Tensor;

/**
 * s_t and the clipped indicator, both [B, T]. `logp` = log π_θ(a_t), `behaviour` = log π_behaviour(a_t)
 * (both zero where mask = 0, so ρ = 1 there), `adv` = A_t·mask. Call inside tf.tidy.
 */
export function surrogate(
  logp: tf.Tensor2D,
  behaviour: tf.Tensor2D | undefined,
  adv: tf.Tensor2D,
  cfg: OffPolicyConfig,
): { s: tf.Tensor2D; clipped: tf.Tensor2D } {
  const mode = cfg.offPolicy ?? "none";
  if (mode === "none" || behaviour === undefined) {
    // s_t = log π_θ(a_t)·A_t
    return { s: tf.mul(logp, adv), clipped: tf.zerosLike(logp) };
  }
  // ρ_t = exp(log π_θ(a_t) − log π_behaviour(a_t))
  const rho = tf.exp(tf.sub(logp, behaviour)); // [B, T]
  if (mode === "ppo-clip") {
    const eps = cfg.clipEpsilon ?? 0.2;
    // unclipped ρ_t·A_t and clipped clip(ρ_t, 1−ε, 1+ε)·A_t
    const unclipped = tf.mul(rho, adv); // [B, T]
    const clippedTerm = tf.mul(tf.clipByValue(rho, 1 - eps, 1 + eps), adv); // [B, T]
    // s_t = min(ρ_t·A_t, clip(ρ_t, 1−ε, 1+ε)·A_t)
    const s = tf.minimum(unclipped, clippedTerm); // [B, T]
    // clipped where the clipped term is strictly smaller (its gradient is 0)
    const clipped = tf.less(clippedTerm, unclipped).cast("float32"); // [B, T]
    return { s: s as tf.Tensor2D, clipped: clipped as tf.Tensor2D };
  }
  const c = cfg.truncation ?? 1;
  // w_t = sg(min(ρ_t, c))
  const w = stopGradient(tf.minimum(rho, c)); // [B, T]
  // s_t = w_t·A_t·log π_θ(a_t)
  const s = tf.mul(tf.mul(w, adv), logp); // [B, T]
  const clipped = tf.greater(rho, c).cast("float32"); // [B, T]
  return { s: s as tf.Tensor2D, clipped: clipped as tf.Tensor2D };
}
