/**
 * How one delivery of a prompt job is tried: the Rollout's retry and deadline policy, apart from
 * the queue loop (rollout-worker.ts) that pulls, publishes and settles jobs. Why its own module:
 * the policy is where the failure cases live (a restarting peer, a Policy on old weights, a hung
 * scorer), and it can be read and tested without the loop around it.
 *
 * - A failing Policy call is retried with backoff for up to `retryMs` of failing time (long
 *   enough to ride out a service restart); the job is held meanwhile (in-progress signals
 *   restart its ack wait).
 * - A Policy on older weights than the job needs is waited for, for at most `staleWaitMs`,
 *   without spending that budget.
 * - Feedback calls are retried inside the job by its ScorerGuard (scorer-guard.ts), so the
 *   Policy's sampling is not redone: a hung scorer or a bad answer fails the job's samples
 *   (SCORE_STATUS_ERROR, excluded and counted) and the job is published; a scorer unreachable for
 *   the whole budget (ScorerUnavailableError) gives the job back at once, since its retries are
 *   spent, and after `maxDeliver` deliveries the job is dead-lettered.
 */
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { QueueMessage } from "../core/src/bus/bus.js";
import { PeerError, ScorerUnavailableError, StaleWeightsError, ValidationError } from "../core/src/errors.js";

/** Default time a failing job is retried before it is given back for redelivery. */
export const DEFAULT_ROLLOUT_RETRY_MS = 30_000;
/**
 * Default longest wait, per delivery, for a Policy to serve the weights a job needs: a replica
 * swaps within seconds (a restarted one within its model load), so past a minute the job's run
 * is likely gone and the job is given back instead of holding a lane.
 */
export const DEFAULT_STALE_WAIT_MS = 60_000;
/** How often a held job's ack wait is restarted (well inside the default 30 s ack wait). */
const IN_PROGRESS_EVERY_MS = 5_000;
/** Longest pause between two tries of a failing or stale job. */
export const MAX_BACKOFF_MS = 2_000;

/** Pause before try `n` (1-based) of a failing job: 250 ms doubling, at most 2 s. */
export function retryBackoffMs(n: number): number {
  return Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.max(0, n - 1));
}

/** How one delivery's tries ended. */
export type Outcome =
  | { kind: "collected"; trajs: Trajectory[] }
  /** Retrying cannot help (the peer refused the request itself): report the samples failed. */
  | { kind: "refused"; error: string }
  /** The retry budget is spent, the scorer hung, or the worker stops: give it back for redelivery. */
  | { kind: "giveBack"; error: string };

/** Failure counters the attempts add to (the worker's RolloutCounters). */
export interface AttemptCounters {
  jobsFailed: number;
}

/** What the attempts need from the worker that runs them. */
export interface AttemptContext {
  /** Failing time one delivery may spend retrying. */
  retryMs: number;
  /** Longest wait per delivery for the Policy to serve the job's weights version. */
  staleWaitMs: number;
  /** False once the worker stops: the job is given back instead of retried. */
  running(): boolean;
  /** Sleep, cut short when the worker stops. */
  pause(ms: number): Promise<void>;
  log(line: string): void;
  counters: AttemptCounters;
}

/**
 * Try `collect` for one delivery of `msg` under the policy above. The job's ack wait is restarted
 * meanwhile, so no other worker gets it while this one still tries.
 */
export async function attemptJob(
  msg: QueueMessage,
  collect: () => Promise<Trajectory[]>,
  ctx: AttemptContext,
): Promise<Outcome> {
  const keepAlive = setInterval(() => msg.inProgress().catch(() => undefined), IN_PROGRESS_EVERY_MS);
  let failingSince: number | null = null;
  let staleSince: number | null = null;
  let failures = 0;
  let stale = 0;
  try {
    for (;;) {
      const started = performance.now();
      try {
        return { kind: "collected", trajs: await collect() };
      } catch (err) {
        const error = (err as Error).message;
        if (!ctx.running()) return { kind: "giveBack", error: `worker stopping (${error})` };
        if (err instanceof StaleWeightsError) {
          // Not a failure: the replica has not swapped to the job's version yet.
          staleSince ??= started;
          if (performance.now() - staleSince > ctx.staleWaitMs) return { kind: "giveBack", error };
          await ctx.pause(Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(stale++, 4)));
          continue;
        }
        ctx.counters.jobsFailed++;
        if (err instanceof ScorerUnavailableError) return { kind: "giveBack", error };
        if (!(err instanceof PeerError || err instanceof ValidationError)) return { kind: "refused", error };
        failingSince ??= started;
        const delay = retryBackoffMs(++failures);
        if (performance.now() + delay - failingSince > ctx.retryMs) {
          return { kind: "giveBack", error: `failing for ${ctx.retryMs} ms: ${error}` };
        }
        ctx.log(
          `rollout: job ${msg.msgId} failed (attempt ${failures}, delivery ${msg.deliveryCount}), retrying in ${delay} ms: ${error}`,
        );
        await ctx.pause(delay);
      }
    }
  } finally {
    clearInterval(keepAlive);
  }
}
