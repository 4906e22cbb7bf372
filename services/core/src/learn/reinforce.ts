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
import { type KlEstimator, klTensor } from "./kl.js";
import { checkOffPolicy, type OffPolicyConfig, surrogate } from "./off-policy.js";
import { returnsToGo, tokenRewards } from "./returns.js";

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
  /** L_pg = −(1/N) Σ mask·log π_θ(a_t|s_t)·A_t. */
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
 *   L = −(1/N) Σ mask·log π_θ(a_t|s_t)·A_t + β·(1/N) Σ mask·KL_t − c_ent·(1/N) Σ mask·H_t,
 * N = Σ mask. Minimising it ascends the seed's J(θ) (the −∇ of the first term is the REINFORCE
 * estimator with returns-to-go). Why logits in, not a model: the caller decides what produced them,
 * and the gradient w.r.t. the logits can be checked by hand. Wasm-safe: no gather, and the one-hot
 * is cast after it is built. The returned tensors are new; the caller disposes them.
 */
export function reinforceLoss(logits: tf.Tensor3D, batch: PgBatch, cfg: PgLossConfig): PgLossOutput {
  checkConfig(cfg);
  if (logits.rank !== 3) throw new ValidationError("logits", `must be [B, T, V], got rank ${logits.rank}`);
  const [b, t, v] = logits.shape;
  for (const [name, x] of Object.entries(batch) as [string, tf.Tensor | undefined][]) {
    if (x === undefined) continue;
    if (x.rank !== 2 || x.shape[0] !== b || x.shape[1] !== t) {
      throw new ValidationError(name, `must be [${b}, ${t}] like the logits, got [${x.shape.join(", ")}]`);
    }
  }
  if (batch.actions.dtype !== "int32") throw new ValidationError("actions", "must be int32");
  return tf.tidy(() => {
    const mask = batch.mask.dtype === "float32" ? batch.mask : batch.mask.cast("float32"); // [B, T]
    const z = logits.dtype === "float32" ? logits : logits.cast("float32"); // [B, T, V]
    // 1. log π_θ(j|s_t) = z_{t,j} − log Σ_k exp z_{t,k}
    const logp = tf.logSoftmax(z); // [B, T, V]
    // 2. 1[j = a_t]; built as int then cast (tf.oneHot(…, 'float32') is wrong on wasm)
    const onehot = tf.oneHot(batch.actions, v).cast("float32"); // [B, T, V]
    // 3. log π_θ(a_t|s_t) = Σ_j 1[j = a_t]·log π_θ(j|s_t), zeroed where mask = 0
    const chosen = tf.mul(tf.sum(tf.mul(logp, onehot), -1), mask); // [B, T]
    // 4. N = Σ mask, at least 1 so an empty batch gives 0, not NaN
    const n = tf.maximum(tf.sum(mask), 1); // []
    // 5. s_t = log π_θ(a_t)·A_t, or its importance-corrected form (off-policy.ts)
    const behaviour = batch.behaviourLogprobs ? tf.mul(batch.behaviourLogprobs, mask) : undefined; // [B, T]
    const sur = surrogate(
      chosen as tf.Tensor2D,
      behaviour as tf.Tensor2D | undefined,
      tf.mul(batch.advantages, mask),
      cfg,
    );
    // L_pg = −(1/N) Σ mask·s_t
    const pgLoss = tf.neg(tf.div(tf.sum(tf.mul(sur.s, mask)), n)); // []
    // clip fraction = (1/N) Σ mask·1[clipped_t]
    const clipFraction = tf.div(tf.sum(tf.mul(sur.clipped, mask)), n); // []
    // 6. KL_t from the sampled token; both log-probs zeroed where mask = 0 so padding gives KL_t = 0
    const klT = klTensor(chosen, tf.mul(batch.refLogprobs, mask), cfg.klEstimator); // [B, T]
    // 7. KL = (1/N) Σ mask·KL_t
    const kl = tf.div(tf.sum(tf.mul(klT, mask)), n); // []
    // 8. H_t = −Σ_j π_θ(j|s_t)·log π_θ(j|s_t)
    const entT = tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), -1)); // [B, T]
    // 9. H = (1/N) Σ mask·H_t
    const entropy = tf.div(tf.sum(tf.mul(entT, mask)), n); // []
    // 10. L = L_pg + β·KL − c_ent·H
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

/** One scored completion, as the Rollout service delivers it. */
export interface PgTrajectory {
  /** Prompt token ids (may be empty; BOS is added by {@link buildPgBatch}). */
  promptTokens: readonly number[];
  /** Sampled completion token ids (≥ 1). */
  completionTokens: readonly number[];
  /** Scalar reward of the whole completion (credited to its last token). */
  reward: number;
  /** Optional per-completion-token rewards; when non-empty they replace `reward`. */
  tokenRewards?: readonly number[];
  /** log π_ref of each completion token (≤ 0, one per completion token). */
  refLogprobs: readonly number[];
  /** log π_behaviour of each completion token (optional; needed for off-policy corrections). */
  behaviourLogprobs?: readonly number[];
  /** Prompt of the trajectory (same id = one group of G samples), for group baselines. */
  groupId?: number;
}

/** How {@link buildPgBatch} lays out and credits a batch. */
export interface PgBatchOptions {
  /** Beginning-of-sequence id put before every prompt (the byte tokenizer's is 256). */
  bosId: number;
  /** Id that right-pads short rows; its positions are masked (EOS, 257, is a fine choice). */
  padId: number;
  /** Vocabulary size V; every id must be in [0, V). */
  vocabSize: number;
  /** Discount γ of the returns-to-go. */
  gamma: number;
  /** Baseline b subtracted from every return-to-go (e.g. MovingAverageBaseline.value). */
  baseline: number;
  /** When set, A_{i,t} = advantages(R)[i][t] replaces R_{i,t} − b (e.g. learn/advantages.ts). */
  advantages?: (returns: number[][]) => number[][];
  /** Model context length; a row longer than this is an error (optional). */
  contextLength?: number;
}

/** Model input and loss batch built from trajectories; the caller disposes the tensors. */
export interface BuiltPgBatch {
  /** Model input ids [B, T], T = max(1 + |prompt| + |completion|) − 1. */
  tokens: tf.Tensor2D;
  /** Actions, mask, advantages and reference log-probs aligned with `tokens`. */
  batch: PgBatch;
  /** Returns-to-go R_t per trajectory (completion tokens only), for the baseline update. */
  returns: number[][];
  /** N = number of completion tokens in the batch. */
  numTokens: number;
}

function checkIds(ids: readonly number[], vocabSize: number, field: string): void {
  for (const [i, id] of ids.entries()) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new ValidationError(`${field}[${i}]`, `must be a token id in [0, ${vocabSize}), got ${id}`);
    }
  }
}

/**
 * Turns trajectories into padded model input and a {@link PgBatch}.
 *
 * Row = [BOS, ...prompt, ...completion], right-padded with `padId`. Input position t predicts the
 * token at t + 1, so the input is the row without its last token (one more token fits the
 * context) and actions[t] = row[t + 1]; completion token i is predicted at t = |prompt| + i, where
 * mask = 1. Advantages are returns-to-go of the per-token rewards minus the baseline.
 */
export function buildPgBatch(trajectories: readonly PgTrajectory[], opts: PgBatchOptions): BuiltPgBatch {
  if (trajectories.length === 0) throw new ValidationError("trajectories", "must not be empty");
  checkIds([opts.bosId, opts.padId], opts.vocabSize, "bosId/padId");
  if (!Number.isFinite(opts.baseline)) throw new ValidationError("baseline", "must be finite");
  const rows: number[][] = [];
  const returns: number[][] = [];
  for (const [i, tr] of trajectories.entries()) {
    const f = `trajectories[${i}]`;
    checkIds(tr.promptTokens, opts.vocabSize, `${f}.promptTokens`);
    checkIds(tr.completionTokens, opts.vocabSize, `${f}.completionTokens`);
    const c = tr.completionTokens.length;
    if (tr.refLogprobs.length !== c) {
      throw new ValidationError(
        `${f}.refLogprobs`,
        `has ${tr.refLogprobs.length} entries for ${c} completion tokens`,
      );
    }
    for (const [k, lp] of tr.refLogprobs.entries()) {
      if (!Number.isFinite(lp) || lp > 0)
        throw new ValidationError(`${f}.refLogprobs[${k}]`, `must be a finite log-prob ≤ 0, got ${lp}`);
    }
    returns.push(returnsToGo(tokenRewards(c, tr.reward, tr.tokenRewards), opts.gamma));
    rows.push([opts.bosId, ...tr.promptTokens, ...tr.completionTokens]);
  }
  const bsz = rows.length;
  const t = Math.max(...rows.map((r) => r.length)) - 1;
  if (opts.contextLength !== undefined && t > opts.contextLength) {
    throw new ValidationError(
      "trajectories",
      `need ${t} input positions, more than the context length ${opts.contextLength}`,
    );
  }
  const tokens = new Int32Array(bsz * t).fill(opts.padId);
  const actions = new Int32Array(bsz * t).fill(opts.padId);
  const mask = new Float32Array(bsz * t);
  const adv = new Float32Array(bsz * t);
  const ref = new Float32Array(bsz * t);
  const hasBehaviour = trajectories.every(
    (tr) => tr.behaviourLogprobs?.length === tr.completionTokens.length,
  );
  const beh = new Float32Array(bsz * t);
  const given = opts.advantages?.(returns);
  let numTokens = 0;
  for (let i = 0; i < bsz; i++) {
    const row = rows[i] as number[];
    const tr = trajectories[i] as PgTrajectory;
    const start = tr.promptTokens.length; // input position that predicts the first completion token
    for (let p = 0; p < row.length - 1; p++) {
      tokens[i * t + p] = row[p] as number;
      actions[i * t + p] = row[p + 1] as number;
    }
    for (let k = 0; k < tr.completionTokens.length; k++) {
      const at = i * t + start + k;
      mask[at] = 1;
      // A_t = R_t − b (or the caller's advantages)
      adv[at] = given ? (given[i]?.[k] as number) : (returns[i]?.[k] as number) - opts.baseline;
      ref[at] = tr.refLogprobs[k] as number;
      if (hasBehaviour) beh[at] = tr.behaviourLogprobs?.[k] as number;
      numTokens++;
    }
  }
  return {
    tokens: tf.tensor2d(tokens, [bsz, t], "int32"),
    batch: {
      actions: tf.tensor2d(actions, [bsz, t], "int32"),
      mask: tf.tensor2d(mask, [bsz, t], "float32"),
      advantages: tf.tensor2d(adv, [bsz, t], "float32"),
      refLogprobs: tf.tensor2d(ref, [bsz, t], "float32"),
      ...(hasBehaviour ? { behaviourLogprobs: tf.tensor2d(beh, [bsz, t], "float32") } : {}),
    },
    returns,
    numTokens,
  };
}

/** Disposes every tensor of a built batch (why: they live outside any tidy). */
export function disposePgBatch(built: BuiltPgBatch): void {
  tf.dispose([
    built.tokens,
    built.batch.actions,
    built.batch.mask,
    built.batch.advantages,
    built.batch.refLogprobs,
    ...(built.batch.behaviourLogprobs ? [built.batch.behaviourLogprobs] : []),
  ]);
}
