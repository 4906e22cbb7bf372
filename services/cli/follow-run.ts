/**
 * Follows a run to its end the same way for every command that trains (`train`, `up`, `run`):
 * the progress display fed from its metrics, then its summary (human, or `--json` on stdout).
 * Why shared: a run watched over gRPC must look exactly like one trained in-process.
 */
import type { RunSummary, StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";
import { reportSummary } from "./commands/report.js";
import type { ProgressReporter } from "./progress.js";

/** A run as seen by its follower. */
export interface FollowedRun {
  runId: string;
  /** Total steps of the run. */
  steps: number;
  /** Steps done before this process started following (a resumed or already running run). */
  fromStep: number;
  /** Every step's metrics (earlier ones may be replayed; they are skipped), ending with the run. */
  metrics: AsyncIterable<StepMetrics>;
  /** The summary once the run has ended; rejects when it failed. */
  result(): Promise<RunSummary>;
}

/**
 * Show the run's progress until it ends, report its summary (the human one to `human`, stderr by
 * default: `rlaif train --log-format json` passes a stream that writes JSON lines), and return it.
 */
export async function followRun(
  progress: ProgressReporter,
  run: FollowedRun,
  json: boolean,
  human?: NodeJS.WritableStream,
): Promise<RunSummary> {
  progress.begin(run.steps, run.fromStep);
  try {
    for await (const m of run.metrics) {
      if (Number(m.step) > run.fromStep) progress.step(m);
    }
  } finally {
    progress.done();
  }
  const summary = await run.result();
  reportSummary(summary, json, human);
  return summary;
}
