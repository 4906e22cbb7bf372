/**
 * A run as GetStatus, ListRuns, WatchMetrics and CancelRun report it, whether it runs (or ran)
 * in this Optimizer or ended before it started (ended-runs.ts). Why one shape: the handlers
 * answer the same fields for both, and must not care which kind of record holds them.
 */
import type { RunSummary, StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { EndedRun } from "./ended-runs.js";
import type { RunRecord } from "./run-controller.js";
import { readMetrics } from "./run-files.js";

/** What the run RPCs report of one run. */
export interface RunView {
  runId: string;
  state: RunState;
  /** Steps completed. */
  step: number;
  /** Steps it is to take. */
  steps: number;
  startedUnixMs: number;
  error: string;
  summary: RunSummary | null;
  /** Its steps' metrics, oldest first (an ended run's read from its metrics.jsonl on each call). */
  history(): readonly StepMetrics[];
}

/** The view of a run of this Optimizer, as it is now. */
export function liveView(run: RunRecord): RunView {
  return {
    runId: run.runId,
    state: run.state,
    step: run.driver.step,
    steps: run.settings.steps,
    startedUnixMs: run.startedUnixMs,
    error: run.error,
    summary: run.summary,
    history: () => run.driver.history,
  };
}

/** The view of a run that ended before this Optimizer started, its history up to its last step. */
export function endedView(run: EndedRun): RunView {
  return {
    runId: run.runId,
    state: run.state,
    step: run.step,
    steps: run.steps,
    startedUnixMs: run.startedUnixMs,
    error: run.error,
    summary: run.summary,
    history: () => readMetrics(run.dir, run.step),
  };
}
