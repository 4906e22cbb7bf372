/**
 * The REINFORCE policy-gradient loss, as the seed states it but done correctly.
 *
 * The seed's code takes argmax instead of sampling, multiplies the whole log-softmax (every
 * vocabulary entry) by one episode return, and has no baseline. Here: the actions are the tokens
 * the policy *sampled*; only the chosen token's log-probability is used; each token is weighted by
 * its advantage A_t = R_t − b (return-to-go minus a baseline); a KL penalty keeps the policy near
 * the frozen reference; an optional entropy bonus keeps it from collapsing.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import { selectLogprobs, tokenEntropy } from "../model/loss.js";
import { type KlEstimator, klTensor } from "./kl.js";
import { checkOffPolicy, type OffPolicyConfig, surrogate } from "./off-policy.js";

// The batch layout lives in pg-batch.ts; re-exported so callers import the estimator from one place.
export {
  type BuiltPgBatch,
  buildPgBatch,
  disposePgBatch,
  type PgBatchOptions,
  type PgTrajectory,
} from "./pg-batch.js";

/** One batch of experience, aligned with the model input tokens [B, T]. */
export interface PgBatch {
  /** a_t: the token sampled after input position t (the target of position t). int32 [B, T]. */
  actions: tf.Tensor2D;
  /** 1 where a_t is a completion token (an action the policy took), else 0. float32 [B, T]. */
  mask: tf.Tensor2D;
  /** A_t = R_t − b. float32 [B, T]. */
  advantages: tf.Tensor2D;
  /** log π_ref(a_t | s_t) under the frozen reference. float32 [B, T]. */
  refLogprobs: tf.Tensor2D;
  /** log π_behaviour(a_t | s_t) under the weights that sampled; needed by off-policy corrections. float32 [B, T]. */
  behaviourLogprobs?: tf.Tensor2D;
}

/** Loss hyperparameters (the off-policy correction is off unless set, see off-policy.ts). */
export interface PgLossConfig extends OffPolicyConfig {
  /** β of the KL penalty to the reference (0 = off). */
  klCoef: number;
  /** KL estimator in the loss; prefer 'k3' (k1's loss gradient is zero in expectation, see kl.ts). */
  klEstimator: KlEstimator;
  /** c_ent of the entropy bonus (0 = off). */
  entropyCoef: number;
}

/** The loss and its parts, all means over the N completion tokens of the batch. */
export interface PgLossOutput {
  /** L = L_pg + β·KL − c_ent·H (what the optimiser minimises). */
  loss: tf.Scalar;
  /** L_pg = −(1/N) Σ mask·s_t, s_t = log π_θ(a_t|s_t)·A_t or its off-policy form. */
  pgLoss: tf.Scalar;
  /** (1/N) Σ mask·KL_t with the configured estimator. */
  kl: tf.Scalar;
  /** (1/N) Σ mask·H_t, H_t the policy's entropy at position t (nats). */
  entropy: tf.Scalar;
  /** Share of completion tokens whose importance ratio was clipped/truncated (see off-policy.ts). */
  clipFraction: tf.Scalar;
}

function checkConfig(cfg: PgLossConfig): void {
  if (!Number.isFinite(cfg.klCoef) || cfg.klCoef < 0)
    throw new ValidationError("klCoef", "must be finite and ≥ 0");
  if (cfg.klEstimator !== "k1" && cfg.klEstimator !== "k3") {
    throw new ValidationError("klEstimator", `must be 'k1' or 'k3', got ${String(cfg.klEstimator)}`);
  }
  if (!Number.isFinite(cfg.entropyCoef) || cfg.entropyCoef < 0) {
    throw new ValidationError("entropyCoef", "must be finite and ≥ 0");
  }
  checkOffPolicy(cfg);
}

/**
 * REINFORCE loss with baseline, KL penalty and entropy bonus:
 *   L = −(1/N) Σ mask·s_t + β·(1/N) Σ mask·KL_t − c_ent·(1/N) Σ mask·H_t,
 * s_t = log π_θ(a_t|s_t)·A_t (on-policy) or its importance-corrected form (off-policy.ts), N = Σ mask. Minimising it ascends the seed's J(θ) (the −∇ of the first term is the REINFORCE
 * estimator with returns-to-go). Why logits in, not a model: the caller decides what produced them,
 * and the gradient w.r.t. the logits can be checked by hand. The log-probs and entropies come
 * from model/loss.ts (one op each, closed-form gradients). The returned tensors are new; the
 * caller disposes them.
 */
export function reinforceLoss(logits: tf.Tensor3D, batch: PgBatch, cfg: PgLossConfig): PgLossOutput {
  checkConfig(cfg);
  if (logits.rank !== 3) throw new ValidationError("logits", `must be [B, T, V], got rank ${logits.rank}`);
  const [b, t] = logits.shape;
  for (const [name, x] of Object.entries(batch) as [string, tf.Tensor | undefined][]) {
    if (x === undefined) continue;
    if (x.rank !== 2 || x.shape[0] !== b || x.shape[1] !== t) {
      throw new ValidationError(name, `must be [${b}, ${t}] like the logits, got [${x.shape.join(", ")}]`);
    }
  }
  if (batch.actions.dtype !== "int32") throw new ValidationError("actions", "must be int32");
  return tf.tidy(() => {
    const mask = batch.mask.dtype === "float32" ? batch.mask : batch.mask.cast("float32"); // [B, T]
    const z = (logits.dtype === "float32" ? logits : logits.cast("float32")) as tf.Tensor3D; // [B, T, V]
    // 1. log π_θ(a_t|s_t) = z_{t,a_t} − log Σ_k exp z_{t,k}, zeroed where mask = 0
    //    (one op with the closed-form gradient onehot(a_t) − π_θ, model/loss.ts)
    const chosen = tf.mul(selectLogprobs(z, batch.actions), mask); // [B, T]
    // 2. N = Σ mask, at least 1 so an empty batch gives 0, not NaN
    const n = tf.maximum(tf.sum(mask), 1); // []
    // 3. s_t = log π_θ(a_t)·A_t, or its importance-corrected form (off-policy.ts)
    const behaviour = batch.behaviourLogprobs ? tf.mul(batch.behaviourLogprobs, mask) : undefined; // [B, T]
    const sur = surrogate(
      chosen as tf.Tensor2D,
      behaviour as tf.Tensor2D | undefined,
      tf.mul(batch.advantages, mask),
      cfg,
    );
    //    L_pg = −(1/N) Σ mask·s_t
    const pgLoss = tf.neg(tf.div(tf.sum(tf.mul(sur.s, mask)), n)); // []
    //    clip fraction = (1/N) Σ mask·1[clipped_t]
    const clipFraction = tf.div(tf.sum(tf.mul(sur.clipped, mask)), n); // []
    // 4. KL_t from the sampled token; both log-probs zeroed where mask = 0 so padding gives KL_t = 0
    const klT = klTensor(chosen, tf.mul(batch.refLogprobs, mask), cfg.klEstimator); // [B, T]
    // 5. KL = (1/N) Σ mask·KL_t
    const kl = tf.div(tf.sum(tf.mul(klT, mask)), n); // []
    // 6. H_t = −Σ_j π_θ(j|s_t)·log π_θ(j|s_t)   (closed-form gradient, model/loss.ts)
    const entT = tokenEntropy(z); // [B, T]
    // 7. H = (1/N) Σ mask·H_t
    const entropy = tf.div(tf.sum(tf.mul(entT, mask)), n); // []
    // 8. L = L_pg + β·KL − c_ent·H
    const loss = tf.sub(tf.add(pgLoss, tf.mul(kl, cfg.klCoef)), tf.mul(entropy, cfg.entropyCoef)); // []
    return {
      loss: loss as tf.Scalar,
      pgLoss: pgLoss as tf.Scalar,
      kl: kl as tf.Scalar,
      entropy: entropy as tf.Scalar,
      clipFraction: clipFraction as tf.Scalar,
    };
  });
}
