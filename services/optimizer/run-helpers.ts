/**
 * Small pure pieces of the run loop, apart so run-driver.ts stays about the loop itself: the
 * per-job sampler seeds (the whole of a run's randomness), reward/KL statistics, and the lock
 * that keeps checkpoints on step boundaries.
 */
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { ValidationError } from "../core/src/errors.js";
import { byteTokenizer } from "../core/src/model/tokenizer.js";
import type { Tokenizer } from "../core/src/model/tokenizer-types.js";
import { exclusionCause } from "./step-stats.js";

/**
 * How a run derives its randomness, saved in resumable checkpoints (`rngState`). Every random
 * draw of a run is the Policy's sampler seeded per job with {@link jobSeed}(seed, step, index),
 * and prompts are taken in a fixed cyclic order, so (seed, step) is the run's whole RNG state: a
 * run resumed at step k draws exactly what it would have drawn. A future change of the scheme
 * must change this name, so an old checkpoint is refused instead of resumed differently.
 */
export const RNG_SCHEME = "jobseed-mix32-v1";

/** Deterministic 32-bit mix of run seed, step and prompt index, for per-job sampler seeds. */
export function jobSeed(seed: number, step: number, index: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [step, index]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

/** Mean and population standard deviation (0, 0 for an empty list). */
export function meanStd(xs: number[]): [number, number] {
  const mean = xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(xs.length, 1);
  return [mean, Math.sqrt(variance)];
}

/** Σ_t (log π_behaviour − log π_ref) of one sample: its k1 KL estimate in nats (the sample table shows it). */
export function trajectoryKl(t: Trajectory): number {
  return t.behaviourLogprobs.reduce((s, lp, i) => s + lp - (t.referenceLogprobs[i] ?? lp), 0);
}

/** Mean over samples of {@link trajectoryKl}: the k1 KL estimate in nats per sample. */
export function sampleKl(trajs: Trajectory[]): number {
  return meanStd(trajs.map(trajectoryKl))[0];
}

/**
 * A FIFO mutex. Why: a step's update, publish and bookkeeping run as one critical section, and a
 * checkpoint (periodic or from the Checkpoint RPC) takes the same lock, so it never captures
 * weights of step k with the counters of step k − 1.
 */
export class StepLock {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` once every earlier task has settled; resolves or rejects with it. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const next = this.tail.then(task, task);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** A run id for runs started without one: sortable by time, valid as a NATS token. */
export function newRunId(): string {
  return `run-${new Date()
    .toISOString()
    .replace(/[-:.TZ]/g, "")
    .slice(0, 14)}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Refuses prompts that cannot be sampled ((BOS +) the prompt's tokens + at least one new token
 * must fit the context), so a bad prompt fails StartRun at once instead of every step that uses
 * it. Counted in the model's own tokens (`tok`; default the byte tokenizer), BOS only where it has one.
 */
export function checkPromptsFit(
  prompts: readonly string[],
  contextLength: number,
  tok: Tokenizer = byteTokenizer,
): void {
  const bos = tok.bos === null ? 0 : 1;
  prompts.forEach((p, i) => {
    const tokens = tok.encode(p).length;
    if (tokens + bos + 1 > contextLength) {
      throw new ValidationError(
        `config.prompts[${i}]`,
        `is ${tokens} tokens; with ${bos ? "BOS and " : ""}one new token it exceeds the model's context of ${contextLength}`,
      );
    }
  });
}

/**
 * Mean weights versions the samples lag behind `version`, the one their update is applied to
 * (StepMetrics.sample_staleness). A sample newer than it (a replica that swapped early) counts 0.
 */
export function meanStaleness(trajs: readonly Trajectory[], version: number): number {
  const lags = trajs.map((t) => Math.max(0, version - Number(t.weightsVersion ?? version)));
  return meanStd(lags)[0];
}

/**
 * The trajectories a step may use: those without an error and sampled by weights version `floor`
 * or newer (floor 0 takes every version). The others are logged, so an excluded sample is never
 * silent; StepMetrics.excluded counts them (and excluded_by_cause by {@link exclusionCause}).
 */
export function usableTrajectories(
  arrived: readonly Trajectory[],
  floor: number,
  log?: (line: string) => void,
): Trajectory[] {
  return arrived.filter((t) => {
    const cause = exclusionCause(t, floor);
    if (cause === "too_stale")
      log?.(
        `optimizer: excluding ${t.id}: sampled by weights v${t.weightsVersion ?? 0}, older than v${floor}`,
      );
    else if (cause) log?.(`optimizer: excluding ${t.id}: ${t.error}`);
    return cause === null;
  });
}
