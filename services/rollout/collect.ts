/**
 * The rollout pipeline for one prompt: sample G completions from the Policy, score them with the
 * Feedback service, score them again under the frozen reference weights, and assemble one
 * Trajectory per completion. Shared by the queue worker and the ad-hoc Collect rpc, so both
 * produce identical trajectories.
 */
import { createHash } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  type SamplingParamsSchema,
  type Trajectory,
  TrajectorySchema,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import {
  type GetInfoRequestSchema,
  type GetInfoResponse,
  type Score,
  type ScoreRequestSchema,
  type ScoreResponse,
  ScoreStatus,
} from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import {
  type GenerateRequestSchema,
  type GenerateResponse,
  type LogprobsRequestSchema,
  type LogprobsResponse,
  WeightsSelector,
} from "../core/gen/rlaif/policy/v1/policy_pb.js";
import {
  PeerError,
  RpcError,
  ScorerResponseError,
  ScorerTimeoutError,
  ScorerUnavailableError,
  StaleWeightsError,
  ValidationError,
} from "../core/src/errors.js";
import { isRetryable } from "../core/src/grpc/client.js";
import { isOkScore, scoreResponseRules, tokenRewardMismatch } from "../core/src/grpc/rules.js";
import { validate } from "../core/src/grpc/validation.js";
import type { ScorerGuard } from "./scorer-guard.js";

/** Options every outgoing call takes (the deadline in particular). */
export interface CallOptions {
  timeoutMs?: number;
  metadata?: Record<string, string>;
}

/** The part of a PolicyService client the pipeline uses. */
export interface PolicyCaller {
  generate(
    req: MessageInitShape<typeof GenerateRequestSchema>,
    opts?: CallOptions,
  ): Promise<GenerateResponse>;
  logprobs(
    req: MessageInitShape<typeof LogprobsRequestSchema>,
    opts?: CallOptions,
  ): Promise<LogprobsResponse>;
}

/**
 * The part of a FeedbackService client the pipeline uses. GetInfo is optional: without it (an
 * in-process fake) the batch limit is the contract's 1024 items.
 */
export interface FeedbackCaller {
  score(req: MessageInitShape<typeof ScoreRequestSchema>, opts?: CallOptions): Promise<ScoreResponse>;
  getInfo?(req: MessageInitShape<typeof GetInfoRequestSchema>, opts?: CallOptions): Promise<GetInfoResponse>;
}

/** One prompt to collect for. */
export interface CollectJob {
  runId: string;
  step: number;
  index: number;
  prompt: string;
  samples: number;
  sampling: MessageInitShape<typeof SamplingParamsSchema>;
  /** Refuse samples from weights older than this (0 = any). */
  minWeightsVersion: number;
  /** W3C trace context to pass on to the peers. */
  traceparent?: string;
}

/** One item as the pipeline sent it to the scorer. */
export interface SentItem {
  completion: string;
  /** The idempotency key it carried ("" = none). */
  idempotencyKey: string;
}

/**
 * Checks a scorer's answer like any untrusted input: the API's response rules (one score per
 * item, a known status, finite rewards when OK, a reason when ERROR), plus what only the caller
 * knows — per-token rewards of an OK score have one entry per UTF-8 byte of the completion text
 * it was sent, and an echoed idempotency key is the one of its item (a scorer that does not echo
 * keys, written before them, leaves it ""). Throws ScorerResponseError naming the scorer.
 */
export function checkScores(res: ScoreResponse, sent: readonly SentItem[]): void {
  const scorer = `"${res.scorerId || "(no scorer_id)"}"${res.scorerVersion ? ` v${res.scorerVersion}` : ""}`;
  try {
    validate(scoreResponseRules(sent.length), res);
  } catch (err) {
    if (err instanceof ValidationError) throw new ScorerResponseError(scorer, err.field, err.reason);
    throw err;
  }
  const bad = tokenRewardMismatch(
    res.scores,
    sent.map((x) => x.completion),
  );
  if (bad) throw new ScorerResponseError(scorer, bad.field, bad.reason);
  res.scores.forEach((s, i) => {
    const item = sent[i] as SentItem;
    if (s.idempotencyKey !== "" && s.idempotencyKey !== item.idempotencyKey) {
      throw new ScorerResponseError(
        scorer,
        `scores[${i}].idempotency_key`,
        `is "${s.idempotencyKey}", but item ${i} was sent with "${item.idempotencyKey}" (answers out of order?)`,
      );
    }
  });
}

/**
 * The idempotency key of one sample's Score item: its trajectory id and a digest of the texts.
 * Why the digest: a redelivered or resumed job samples the same trajectory id again, possibly
 * with another completion, and the contract refuses a key reused for different text; with the
 * digest a retried call of the same text hits the scorer's cache, a new text gets a new key.
 */
export function scoreKey(trajectory: string, prompt: string, completion: string): string {
  const digest = createHash("sha256").update(prompt).update("\0").update(completion).digest("hex");
  return `${trajectory}~${digest.slice(0, 16)}`;
}

/**
 * Why a sample the scorer did not score is excluded, as Trajectory.error: the scorer's reason,
 * so the Optimizer's log says which scorer declined or failed and why. "" for an OK score.
 */
export function scoreExclusion(score: Score, scorerId: string): string {
  if (score.status === ScoreStatus.ABSTAIN) {
    return `scorer ${scorerId} abstained${score.rationale ? `: ${score.rationale}` : ""}`;
  }
  if (score.status === ScoreStatus.ERROR) return `scorer ${scorerId} failed on this sample: ${score.error}`;
  return "";
}

/**
 * A scorer's per-byte rewards as per-token rewards of the completion the policy wrote: each token
 * gets the sum of the rewards of the bytes it wrote (`tokenBytes`, one entry per token, from the
 * Policy's tokenizer), so a multi-byte character split over tokens credits each of them with its
 * own bytes, and a token holding several characters gets all of theirs. Bytes after the text (a
 * stop sequence the text leaves out, a final EOS, which writes none) earn 0. When the tokens'
 * bytes do not start with the text's (invalid UTF-8 shown as U+FFFD) or the Policy reported no
 * bytes per token, positions are unknown: [] tells the learner to credit the scalar reward.
 */
export function alignTokenRewards(
  tokenBytes: readonly Uint8Array[],
  text: string,
  byteRewards: readonly number[],
): number[] {
  if (byteRewards.length === 0) return [];
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length !== byteRewards.length) return [];
  const out: number[] = [];
  let at = 0; // offset in the completion's bytes
  for (const tb of tokenBytes) {
    let sum = 0;
    let first = true; // the first reward is taken as is (no 0 + r), so a byte token's is exact
    for (const b of tb) {
      if (at < bytes.length) {
        if (b !== bytes[at]) return [];
        const r = byteRewards[at] as number;
        sum = first ? r : sum + r;
        first = false;
      }
      at++;
    }
    out.push(sum);
  }
  return at >= bytes.length ? out : [];
}

/** Trajectory id: unique per run, step, prompt and sample; the Optimizer applies each id once. */
export function trajectoryId(runId: string, step: number, index: number, sample: number): string {
  return `${runId}.${step}.${index}.${sample}`;
}

/**
 * The trajectories of a job that could not be collected: one per sample, carrying the error and
 * no tokens, so the Optimizer learns of the failure at once (and excludes them) instead of
 * waiting for samples that will never come.
 */
export function failedTrajectories(job: CollectJob, error: string): Trajectory[] {
  return Array.from({ length: job.samples }, (_, sample) =>
    create(TrajectorySchema, {
      id: trajectoryId(job.runId, job.step, job.index, sample),
      runId: job.runId,
      step: job.step,
      promptIndex: job.index,
      sampleIndex: sample,
      prompt: job.prompt,
      error,
    }),
  );
}

/**
 * `call` with a deadline of its own: a ScorerTimeoutError after `ms`, whether or not the caller
 * honours the `timeoutMs` it was given (an in-process or fake scorer may not), and also when the
 * gRPC deadline fires first (DEADLINE_EXCEEDED). Why a timer besides the gRPC deadline: the
 * Rollout must not depend on every FeedbackCaller implementing deadlines to bound a hung scorer.
 */
export async function scoreWithin<T>(ms: number, call: () => Promise<T>): Promise<T> {
  const late = () => new ScorerTimeoutError(`Feedback.Score did not answer within ${ms} ms`);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      call(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(late()), ms);
      }),
    ]);
  } catch (cause) {
    if (cause instanceof RpcError && cause.code === status.DEADLINE_EXCEEDED) throw late();
    throw cause;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sample, score and reference-score the completions of one prompt. Policy calls get `timeoutMs`;
 * the Feedback calls go through `scorer` (scorer-guard.ts: their own deadline, retries, batch
 * limit and circuit breaker), and samples the scorer failed on (hung past its attempts, a bad
 * answer, an open circuit) come back as SCORE_STATUS_ERROR trajectories with the reason, which
 * the Optimizer excludes and counts: the step goes on with the rest.
 * Throws StaleWeightsError when the Policy's version is older than `job.minWeightsVersion`,
 * ScorerUnavailableError when the scorer stays unreachable for the retry budget, and PeerError
 * when a Policy call fails (the caller gives the job back for redelivery: nothing is lost).
 */
export async function collectPrompt(
  policy: PolicyCaller,
  scorer: ScorerGuard,
  job: CollectJob,
  timeoutMs: number,
): Promise<Trajectory[]> {
  const opts: CallOptions = { timeoutMs, metadata: job.traceparent ? { traceparent: job.traceparent } : {} };
  // A peer's refusal of the request itself (INVALID_ARGUMENT, …) is passed on unchanged: retrying
  // cannot help. Transport failures and timeouts become PeerError (UNAVAILABLE): retry later.
  const peer = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (cause) {
      if (
        cause instanceof ScorerTimeoutError ||
        cause instanceof ScorerUnavailableError ||
        cause instanceof StaleWeightsError
      )
        throw cause;
      if (cause instanceof RpcError && !isRetryable(cause)) throw cause;
      throw new PeerError(`${what} failed: ${(cause as Error).message}`, { cause });
    }
  };
  // 1. Sample G completions with their behaviour log-probs and the weights version.
  // The replica waits for the job's version itself (a replica that ignores the field is caught
  // by the check below); one that does not get there in time refuses without sampling.
  const gen = await peer("Policy.Generate", async () => {
    try {
      return await policy.generate(
        {
          prompts: [job.prompt],
          samplesPerPrompt: job.samples,
          sampling: job.sampling,
          ...(job.minWeightsVersion > 0 ? { minWeightsVersion: BigInt(job.minWeightsVersion) } : {}),
        },
        opts,
      );
    } catch (err) {
      if (err instanceof RpcError && err.code === status.FAILED_PRECONDITION && job.minWeightsVersion > 0) {
        throw new StaleWeightsError(`Policy.Generate: ${err.details}`, { cause: err });
      }
      throw err;
    }
  });
  const version = Number(gen.weightsVersion);
  if (version < job.minWeightsVersion) {
    throw new StaleWeightsError(`policy serves v${version}, job needs v${job.minWeightsVersion} or newer`);
  }
  // 2. Score them with the AI feedback service.
  const items = gen.completions.map((c) => ({
    prompt: job.prompt,
    completion: c.text,
    idempotencyKey: scoreKey(trajectoryId(job.runId, job.step, job.index, c.sampleIndex), job.prompt, c.text),
  }));
  const { res: scores, failures } = await peer("Feedback.Score", () => scorer.score(items, opts));
  const scorerId = scores.scorerId || scorer.name;
  // 3. Log-probs of the same tokens under the frozen reference policy (for the KL penalty).
  const ref = await peer("Policy.Logprobs", () =>
    policy.logprobs(
      {
        weights: WeightsSelector.REFERENCE,
        sequences: gen.completions.map((c) => ({ promptTokens: c.promptTokens, completionTokens: c.tokens })),
      },
      opts,
    ),
  );
  // 4. One trajectory per completion. A sample the scorer abstained on or failed on keeps its
  // tokens (for the record) but gets no reward: its status and error exclude it from the update.
  return gen.completions.map((c, i) => {
    const score = scores.scores[i] as Score;
    const ok = isOkScore(score);
    return create(TrajectorySchema, {
      id: trajectoryId(job.runId, job.step, job.index, c.sampleIndex),
      runId: job.runId,
      step: job.step,
      promptIndex: job.index,
      sampleIndex: c.sampleIndex,
      prompt: job.prompt,
      completion: c.text,
      promptTokens: c.promptTokens,
      completionTokens: c.tokens,
      behaviourLogprobs: c.logprobs,
      referenceLogprobs: ref.results[i]?.logprobs ?? [],
      reward: ok ? score.reward : 0,
      // a Policy that reports no bytes per token leaves the positions unknown (scalar reward)
      tokenRewards:
        ok && c.tokenBytes.length === c.tokens.length
          ? alignTokenRewards(c.tokenBytes, c.text, score.tokenRewards)
          : [],
      weightsVersion: gen.weightsVersion,
      scorerId: scores.scorerId,
      scorerVersion: scores.scorerVersion,
      scorerModelHash: scores.modelHash,
      scoreStatus: ok ? ScoreStatus.OK : score.status,
      error: failures[i] || scoreExclusion(score, scorerId),
      rationale: score.rationale,
      finishReason: c.finishReason,
    });
  });
}
