/**
 * When a step has lost too many of its samples to train on (docs/feedback-contract.md#resilience).
 * Why a rule of its own: a broken scorer excludes samples instead of rewarding them 0, so a run
 * would otherwise go on learning from a small, biased rest (or from nothing) without a word. The
 * run fails instead, with a message that says why: no scorer is left (no sample usable and the
 * scorer's circuit open), every sample failed, or more than `run.maxExcludedShare` of them were excluded.
 */
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { CIRCUIT_OPEN } from "../core/src/errors.js";
import { excludedByCause } from "./step-stats.js";

/**
 * Why step `step` must end the run, or null when it may be trained on: `arrived` are its samples,
 * `usable` how many of them survived exclusion, `floor` the staleness floor they were judged by.
 */
export function exclusionFailure(
  step: number,
  arrived: readonly Trajectory[],
  usable: number,
  floor: number,
  maxShare: number,
): string | null {
  const n = arrived.length;
  if (n === 0) return null;
  const first = arrived.find((t) => t.error)?.error ?? "";
  const refused = arrived.find((t) => t.error.includes(CIRCUIT_OPEN));
  if (usable === 0 && refused) {
    return `step ${step}: no scorer is left, no sample could be scored: ${refused.error}`;
  }
  if (usable === 0) return `step ${step}: every sample failed; the first error: ${first}`;
  const excluded = n - usable;
  if (excluded / n <= maxShare) return null;
  const causes = Object.entries(excludedByCause(arrived, floor))
    .map(([cause, k]) => `${k} ${cause}`)
    .join(", ");
  return (
    `step ${step}: ${excluded} of ${n} samples excluded (${causes}), more than max-excluded-share ` +
    `${maxShare} allows; the first error: ${first}`
  );
}
