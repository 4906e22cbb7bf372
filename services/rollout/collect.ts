/**
 * The rollout pipeline for one prompt: sample G completions from the Policy, score them with the
 * Feedback service, score them again under the frozen reference weights, and assemble one
 * Trajectory per completion. Shared by the queue worker and the ad-hoc Collect rpc, so both
 * produce identical trajectories.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  type SamplingParamsSchema,
  type Trajectory,
  TrajectorySchema,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import type { ScoreRequestSchema, ScoreResponse } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
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
  ScorerTimeoutError,
  StaleWeightsError,
  ValidationError,
} from "../core/src/errors.js";
import { isRetryable } from "../core/src/grpc/client.js";
import { scoreResponseRules } from "../core/src/grpc/rules.js";
import { validate } from "../core/src/grpc/validation.js";

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

/** The part of a FeedbackService client the pipeline uses. */
export interface FeedbackCaller {
  score(req: MessageInitShape<typeof ScoreRequestSchema>, opts?: CallOptions): Promise<ScoreResponse>;
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

/**
 * Checks a scorer's answer like any untrusted input: the API's response rules (one finite score
 * per item), plus what only the caller knows — per-token rewards have one entry per UTF-8 byte
 * of the completion text it was sent.
 */
export function checkScores(res: ScoreResponse, texts: string[]): void {
  validate(scoreResponseRules(texts.length), res);
  res.scores.forEach((s, i) => {
    const n = s.tokenRewards.length;
    const bytes = Buffer.byteLength(texts[i] as string, "utf8");
    if (n !== 0 && n !== bytes) {
      throw new ValidationError(`scores[${i}].token_rewards`, `has ${n} entries for ${bytes} UTF-8 bytes`);
    }
  });
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
 * the Feedback call gets `feedbackTimeoutMs` (default the same), since a scorer answers in
 * milliseconds to seconds while a large sampling call may take a minute.
 * Throws StaleWeightsError when the Policy's version is older than `job.minWeightsVersion`,
 * ScorerTimeoutError when the scorer does not answer in time, and PeerError when a peer fails
 * (the caller gives the job back for redelivery: nothing is lost).
 */
export async function collectPrompt(
  policy: PolicyCaller,
  feedback: FeedbackCaller,
  job: CollectJob,
  timeoutMs: number,
  feedbackTimeoutMs = timeoutMs,
): Promise<Trajectory[]> {
  const opts: CallOptions = { timeoutMs, metadata: job.traceparent ? { traceparent: job.traceparent } : {} };
  // A peer's refusal of the request itself (INVALID_ARGUMENT, …) is passed on unchanged: retrying
  // cannot help. Transport failures and timeouts become PeerError (UNAVAILABLE): retry later.
  const peer = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (cause) {
      if (cause instanceof ScorerTimeoutError || cause instanceof StaleWeightsError) throw cause;
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
  const items = gen.completions.map((c) => ({ prompt: job.prompt, completion: c.text }));
  const scores = await peer("Feedback.Score", () =>
    scoreWithin(feedbackTimeoutMs, () =>
      feedback.score({ items }, { ...opts, timeoutMs: feedbackTimeoutMs }),
    ),
  );
  checkScores(
    scores,
    items.map((item) => item.completion),
  );
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
  // 4. One trajectory per completion.
  return gen.completions.map((c, i) => {
    const score = scores.scores[i];
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
      reward: score?.reward ?? 0,
      // a Policy that reports no bytes per token leaves the positions unknown (scalar reward)
      tokenRewards:
        c.tokenBytes.length === c.tokens.length
          ? alignTokenRewards(c.tokenBytes, c.text, score?.tokenRewards ?? [])
          : [],
      weightsVersion: gen.weightsVersion,
      scorerId: scores.scorerId,
      scorerVersion: scores.scorerVersion,
      rationale: score?.rationale ?? "",
      finishReason: c.finishReason,
    });
  });
}
