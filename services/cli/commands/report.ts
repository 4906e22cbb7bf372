/**
 * How a finished run is reported: `--json` prints the protobuf-JSON RunSummary as the last line
 * of stdout (for scripts), otherwise a short human summary goes to stderr.
 */
import { toJsonString } from "@bufbuild/protobuf";
import { type RunSummary, RunSummarySchema } from "../../core/gen/rlaif/common/v1/types_pb.js";

/** Print a run summary. */
export function reportSummary(summary: RunSummary, json: boolean): void {
  if (json) {
    process.stdout.write(`${toJsonString(RunSummarySchema, summary, { alwaysEmitImplicit: true })}\n`);
    return;
  }
  const r = (x: number) => x.toFixed(3);
  process.stderr.write(
    `run ${summary.runId} (${summary.mode}): ${summary.steps} steps, ${summary.trajectories} trajectories, ` +
      `reward ${r(summary.firstMeanReward)} → ${r(summary.lastMeanReward)}, KL ${r(summary.finalKl)} nats, ` +
      `weights v${summary.finalWeightsVersion}, ${summary.wallSeconds.toFixed(1)} s` +
      `${summary.checkpointPath ? `\nfinal checkpoint: ${summary.checkpointPath}` : ""}\n`,
  );
}
