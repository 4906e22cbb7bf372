/**
 * Lays out scored completions as model input and a {@link PgBatch} for the REINFORCE loss:
 * per-token rewards → returns-to-go → advantages, padded to [B, T] with a mask.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import type { PgBatch } from "./reinforce.js";
import { returnsToGo, tokenRewards } from "./returns.js";

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
  /**
   * Beginning-of-sequence id put before every prompt (the byte tokenizer's is 256); null for a
   * model without one (its prompts must then be non-empty).
   */
  bosId: number | null;
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
  /** Model input ids [B, T], T = max(b + |prompt| + |completion|) − 1 (b = 1 with a BOS, else 0). */
  tokens: tf.Tensor2D;
  /**
   * Per row b + |prompt|: where the prompt ends, for `ForwardOptions.sourceLengths` (a Seq2Seq
   * policy encodes those tokens and decodes the completion; causal LMs ignore it).
   */
  sourceLengths: number[];
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
 * Row = [BOS, ...prompt, ...completion] (no BOS when `bosId` is null), right-padded with `padId`. Input position t predicts the
 * token at t + 1, so the input is the row without its last token (one more token fits the
 * context) and actions[t] = row[t + 1]; completion token i is predicted at t = |prompt| + i, where
 * mask = 1. Advantages are returns-to-go of the per-token rewards minus the baseline.
 */
export function buildPgBatch(trajectories: readonly PgTrajectory[], opts: PgBatchOptions): BuiltPgBatch {
  if (trajectories.length === 0) throw new ValidationError("trajectories", "must not be empty");
  const head = opts.bosId === null ? [] : [opts.bosId];
  checkIds([...head, opts.padId], opts.vocabSize, "bosId/padId");
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
    if (head.length + tr.promptTokens.length === 0) {
      throw new ValidationError(`${f}.promptTokens`, "must not be empty for a model without a BOS token");
    }
    returns.push(returnsToGo(tokenRewards(c, tr.reward, tr.tokenRewards), opts.gamma));
    rows.push([...head, ...tr.promptTokens, ...tr.completionTokens]);
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
    const start = head.length + tr.promptTokens.length - 1; // input position predicting the first completion token
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
    sourceLengths: trajectories.map((tr) => head.length + tr.promptTokens.length),
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
