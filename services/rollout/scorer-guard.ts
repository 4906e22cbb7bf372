/**
 * The Rollout's side of the feedback contract's failure rules (docs/feedback-contract.md#resilience):
 * every Score call to one scorer address goes through its ScorerGuard, which
 * - asks the scorer's GetInfo once per connection and splits a batch larger than its
 *   `max_batch_items` into several calls;
 * - gives each call a deadline, and retries a hung scorer (DEADLINE_EXCEEDED) with exponential
 *   backoff and full jitter for a small bounded number of attempts, after which the items are
 *   failed ("timed out after N attempts") instead of the whole job being redelivered;
 * - rejects a bad answer (NaN/±Inf, the wrong count, per-token rewards of the wrong length) with
 *   the ScorerResponseError naming the scorer, failing those items at once: a deterministic
 *   scorer bug would answer the same on every retry, so retrying only loops;
 * - retries a call the scorer broke on (INTERNAL, UNKNOWN, CANCELLED, DATA_LOSS: a crash
 *   mid-call) like a timeout, then fails its items;
 * - rides out an unreachable scorer (UNAVAILABLE: a restart) for `retryMs` of failing time, then
 *   throws ScorerUnavailableError so the job is given back for redelivery, as before;
 * - keeps a circuit breaker per address: after K failed operations in a row it fails items at
 *   once ("circuit open") without calling, until a probe after the cool-down succeeds.
 * Why here and not around the whole job: only the Score call is retried, so the Policy's
 * sampling of the job is not redone per retry.
 */

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  type Score,
  type ScoreItemSchema,
  type ScoreResponse,
  ScoreResponseSchema,
  ScoreSchema,
  ScoreStatus,
} from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { fullJitterMs } from "../core/src/backoff.js";
import {
  RpcError,
  ScorerResponseError,
  ScorerTimeoutError,
  ScorerUnavailableError,
  ValidationError,
} from "../core/src/errors.js";
import { isRetryable } from "../core/src/grpc/client.js";
import { MAX_SCORE_ITEMS } from "../core/src/grpc/rules.js";
import { CircuitBreaker } from "./circuit-breaker.js";
import { type CallOptions, checkScores, type FeedbackCaller, scoreWithin } from "./collect.js";

/** Default attempts of a Score call to a hung scorer before its items are failed. */
export const DEFAULT_SCORER_ATTEMPTS = 3;
/** Default first backoff of a Score retry (doubling, capped by {@link SCORER_BACKOFF_CAP_MS}). */
export const DEFAULT_SCORER_BACKOFF_MS = 200;
/** Longest backoff between two Score attempts. */
export const SCORER_BACKOFF_CAP_MS = 2_000;
/** Default consecutive failed Score operations that open a scorer's circuit. */
export const DEFAULT_BREAKER_FAILURES = 5;
/** Default time an open circuit refuses calls before one probe is let through. */
export const DEFAULT_BREAKER_COOL_DOWN_MS = 10_000;

/**
 * Codes of a call the scorer broke on (a crash mid-call, an unhandled exception): retried like a
 * timeout, a few attempts, then its items fail. Other non-retryable codes (INVALID_ARGUMENT, …)
 * refuse the request itself and are passed on.
 */
const BROKEN_CODES: readonly number[] = [status.INTERNAL, status.UNKNOWN, status.CANCELLED, status.DATA_LOSS];

/** A ScorerGuard's tuning. */
export interface ScorerGuardOptions {
  /** Names the scorer in errors, logs and the breaker (its address, or "in-process"). */
  name: string;
  /** Deadline of each Score attempt. */
  timeoutMs: number;
  /** Attempts of a call that times out (≥ 1; default 3). */
  attempts?: number;
  /** First backoff, doubled per retry up to 2 s, then drawn uniformly in [0, it) (full jitter). */
  backoffMs?: number;
  /** Failing time an unreachable scorer (UNAVAILABLE, …) is retried before the job is given back. */
  retryMs: number;
  /** Consecutive failed operations that open the circuit (default 5). */
  breakerFailures?: number;
  /** Cool-down of an open circuit before a probe (default 10 s). */
  breakerCoolDownMs?: number;
  log?: (line: string) => void;
  /** Uniform in [0, 1) for the jitter (tests pass a fixed one). */
  random?: () => number;
  /** Sleep (the worker's, cut short when it stops). */
  pause?: (ms: number) => Promise<void>;
  /** Called once per operation failed for a hung scorer (the worker's scorerTimeouts counter). */
  onTimedOut?: () => void;
  /** False once the worker stops: an unreachable scorer is then not retried further. */
  running?: () => boolean;
}

/** A batch's scores: one per item; `failures[i]` is why item i got none from the scorer (else ""). */
export interface GuardedScores {
  res: ScoreResponse;
  failures: string[];
}

/** Full-jitter exponential backoff before retry `n` (1-based): uniform in [0, min(cap, base·2^(n-1))). */
export function jitteredBackoffMs(n: number, baseMs: number, random: () => number = Math.random): number {
  return fullJitterMs(n, baseMs, SCORER_BACKOFF_CAP_MS, random);
}

/** Guards every Score call to one scorer address; share one instance per connection. */
export class ScorerGuard {
  readonly breaker: CircuitBreaker;
  /** The scorer's name in errors and logs. */
  readonly name: string;
  /** Score operations that ended in failure, by kind (the worker's log and tests read them). */
  readonly counters = { timedOut: 0, badAnswers: 0, circuitOpen: 0, unavailable: 0, calls: 0 };
  private limit: Promise<number> | null = null;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly random: () => number;
  private readonly pause: (ms: number) => Promise<void>;

  constructor(
    private readonly feedback: FeedbackCaller,
    private readonly opts: ScorerGuardOptions,
  ) {
    this.name = opts.name;
    this.attempts = opts.attempts ?? DEFAULT_SCORER_ATTEMPTS;
    this.backoffMs = opts.backoffMs ?? DEFAULT_SCORER_BACKOFF_MS;
    if (!(Number.isInteger(this.attempts) && this.attempts >= 1)) {
      throw new ValidationError("attempts", `${opts.attempts} must be a positive integer`);
    }
    if (!(opts.timeoutMs > 0)) throw new ValidationError("timeoutMs", `${opts.timeoutMs} must be > 0`);
    this.random = opts.random ?? Math.random;
    this.pause = opts.pause ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.breaker = new CircuitBreaker({
      name: opts.name,
      failures: opts.breakerFailures ?? DEFAULT_BREAKER_FAILURES,
      coolDownMs: opts.breakerCoolDownMs ?? DEFAULT_BREAKER_COOL_DOWN_MS,
      ...(opts.log ? { log: opts.log } : {}),
    });
  }

  /**
   * Most items per Score call: GetInfo's `max_batch_items`, asked once. A scorer without GetInfo
   * (UNIMPLEMENTED, written before it) or answering 0 gets the contract's 1024; a GetInfo that
   * fails otherwise (the scorer is down) is asked again by the next batch.
   */
  batchLimit(opts: CallOptions): Promise<number> {
    if (!this.feedback.getInfo) return Promise.resolve(MAX_SCORE_ITEMS);
    const getInfo = this.feedback.getInfo.bind(this.feedback);
    this.limit ??= scoreWithin(this.opts.timeoutMs, () =>
      getInfo({}, { ...opts, timeoutMs: this.opts.timeoutMs }),
    )
      .then((info) => Math.min(MAX_SCORE_ITEMS, info.maxBatchItems || MAX_SCORE_ITEMS))
      .catch((err: unknown) => {
        if (err instanceof RpcError && err.code === status.UNIMPLEMENTED) return MAX_SCORE_ITEMS;
        this.limit = null;
        this.opts.log?.(
          `rollout: GetInfo of scorer ${this.opts.name} failed, assuming 1024 items per call: ${(err as Error).message}`,
        );
        return MAX_SCORE_ITEMS;
      });
    return this.limit;
  }

  /**
   * Score `items`, split by the batch limit, each part under the rules above. Items of a part the
   * scorer failed on come back as SCORE_STATUS_ERROR with the reason in `failures`. Throws
   * ScorerUnavailableError when the scorer stays unreachable for `retryMs`, and passes on a
   * refusal of the request itself (INVALID_ARGUMENT, …): retrying cannot help.
   */
  async score(items: MessageInitShape<typeof ScoreItemSchema>[], opts: CallOptions): Promise<GuardedScores> {
    const limit = await this.batchLimit(opts);
    const parts: MessageInitShape<typeof ScoreItemSchema>[][] = [];
    for (let at = 0; at < items.length; at += limit) parts.push(items.slice(at, at + limit));
    const answers = await Promise.all(parts.map((part) => this.scorePart(part, opts)));
    const res = create(ScoreResponseSchema, {});
    const failures: string[] = [];
    for (const [k, answer] of answers.entries()) {
      if (typeof answer === "string") {
        const part = parts[k] as unknown[];
        for (const _ of part) {
          res.scores.push(failedScore(answer));
          failures.push(answer);
        }
        continue;
      }
      if (!res.scorerId) Object.assign(res, { ...answer, scores: res.scores });
      res.scores.push(...answer.scores);
      for (const _ of answer.scores) failures.push("");
    }
    return { res, failures };
  }

  /** One call's worth of items: the checked answer, or why its items fail. */
  private async scorePart(
    items: MessageInitShape<typeof ScoreItemSchema>[],
    opts: CallOptions,
  ): Promise<ScoreResponse | string> {
    if (!this.breaker.admit()) {
      this.counters.circuitOpen++;
      return this.breaker.refusal();
    }
    const sent = items.map((x) => ({
      completion: x.completion ?? "",
      idempotencyKey: x.idempotencyKey ?? "",
    }));
    let failingSince: number | null = null;
    for (let attempt = 1, retries = 0; ; ) {
      const started = performance.now();
      try {
        this.counters.calls++;
        const res = await scoreWithin(this.opts.timeoutMs, () =>
          this.feedback.score({ items }, { ...opts, timeoutMs: this.opts.timeoutMs }),
        );
        checkScores(res, sent);
        this.breaker.success();
        return res;
      } catch (err) {
        if (err instanceof ScorerResponseError) {
          this.counters.badAnswers++;
          this.breaker.failure(err.message);
          return err.message;
        }
        const broken = err instanceof RpcError && BROKEN_CODES.includes(err.code);
        if (err instanceof ScorerTimeoutError || broken) {
          if (attempt >= this.attempts) {
            const why = broken
              ? `scorer ${this.opts.name} failed ${this.attempts} attempts: ${(err as Error).message}`
              : `scorer ${this.opts.name} timed out after ${this.attempts} attempts (${this.opts.timeoutMs} ms each)`;
            if (broken) this.counters.badAnswers++;
            else {
              this.counters.timedOut++;
              this.opts.onTimedOut?.();
            }
            this.breaker.failure(why);
            return why;
          }
          attempt++;
        } else if (err instanceof RpcError && !isRetryable(err)) {
          throw err;
        } else {
          failingSince ??= started;
          if (performance.now() - failingSince >= this.opts.retryMs || this.opts.running?.() === false) {
            const why = `scorer ${this.opts.name} unreachable for ${this.opts.retryMs} ms: ${(err as Error).message}`;
            this.counters.unavailable++;
            this.breaker.failure(why);
            throw new ScorerUnavailableError(why, { cause: err });
          }
        }
        const delay = jitteredBackoffMs(++retries, this.backoffMs, this.random);
        this.opts.log?.(
          `rollout: Score to ${this.opts.name} failed (retry ${retries} in ${Math.round(delay)} ms): ${(err as Error).message}`,
        );
        await this.pause(delay);
      }
    }
  }
}

/** The ERROR score of an item whose call failed. */
function failedScore(error: string): Score {
  return create(ScoreSchema, { status: ScoreStatus.ERROR, error });
}
