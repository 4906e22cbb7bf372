/**
 * The pipeline figures of a step's metrics (docs/architecture.md#learning-metrics): why each
 * sample was left out, how stale the applied ones were, which worker produced how many tokens,
 * and how busy the learner was. Pure functions and one small clock, apart from run-driver.ts so
 * the loop stays about the loop and each figure can be tested on its own.
 */
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { DEAD_LETTERED } from "../core/src/errors.js";

/** Why a sample that arrived for its step was not applied (StepMetrics.excluded_by_cause keys). */
export type ExclusionCause = "error" | "dead_lettered" | "too_stale" | "abstained" | "scorer_error";

/**
 * Why `t` is excluded from its step's update, or null when it is used: the scorer abstained or
 * failed on it (its score status), else an error (a dead-lettered job's samples named apart),
 * else a weights version older than `floor` (0 admits every version).
 */
export function exclusionCause(t: Trajectory, floor: number): ExclusionCause | null {
  if (t.scoreStatus === ScoreStatus.ABSTAIN) return "abstained";
  if (t.scoreStatus === ScoreStatus.ERROR) return "scorer_error";
  if (t.error) return t.error.startsWith(DEAD_LETTERED) ? "dead_lettered" : "error";
  if (Number(t.weightsVersion ?? 0) < floor) return "too_stale";
  return null;
}

/** Count of `arrived` per exclusion cause (causes with none left out); sums to the excluded. */
export function excludedByCause(arrived: readonly Trajectory[], floor: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of arrived) {
    const cause = exclusionCause(t, floor);
    if (cause) out[cause] = (out[cause] ?? 0) + 1;
  }
  return out;
}

/**
 * Applied samples by lag: entry i counts the samples sampled i versions before `version`, the one
 * the update is applied to, for i = 0..maxStaleness. A sample newer than `version` counts as lag 0
 * (as in meanStaleness); one older than the bound is clamped into the last entry (the driver
 * never applies one: usableTrajectories refuses it), so the entries always sum to the samples.
 */
export function stalenessHistogram(
  trajs: readonly Trajectory[],
  version: number,
  maxStaleness: number,
): number[] {
  const counts = new Array<number>(maxStaleness + 1).fill(0);
  for (const t of trajs) {
    const lag = Math.min(maxStaleness, Math.max(0, version - Number(t.weightsVersion ?? version)));
    counts[lag] = (counts[lag] as number) + 1;
  }
  return counts;
}

/**
 * Completion tokens of `trajs` per second of `seconds`, by the Rollout worker that produced them
 * ("unknown" for a producer that did not say). Why over the step's wall time and not the time
 * each worker spent generating: it is the rate at which samples reach the learner, which is what
 * decides whether the Optimizer waits; summed over workers it is the step's sample throughput.
 */
export function tokensPerSecondByWorker(
  trajs: readonly Trajectory[],
  seconds: number,
): Record<string, number> {
  const tokens: Record<string, number> = {};
  for (const t of trajs) {
    const worker = t.rolloutWorker || "unknown";
    tokens[worker] = (tokens[worker] ?? 0) + t.completionTokens.length;
  }
  return Object.fromEntries(Object.entries(tokens).map(([w, n]) => [w, seconds > 0 ? n / seconds : 0]));
}

/**
 * Wall time the learner spends computing, between two step records. Why a clock of its own:
 * with overlap an update runs while the next step's samples are gathered, so the busy share of a
 * step cannot be read off the loop's own timeline; every learner call is timed instead, and
 * `lap()` at each record turns the time since the previous record into a share.
 */
export class BusyClock {
  private busyMs = 0;
  private lapStart = performance.now();

  /** Start a fresh interval now (the run's loop begins). */
  reset(): void {
    this.busyMs = 0;
    this.lapStart = performance.now();
  }

  /** Await `work`, counting its wall time as busy. */
  async time<T>(work: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      this.busyMs += performance.now() - t0;
    }
  }

  /** The interval since the last lap (or reset): its seconds and busy share; starts the next. */
  lap(): { seconds: number; busyFraction: number } {
    const now = performance.now();
    const ms = now - this.lapStart;
    const busyFraction = ms > 0 ? Math.min(1, this.busyMs / ms) : 0;
    this.busyMs = 0;
    this.lapStart = now;
    return { seconds: ms / 1000, busyFraction };
  }
}
