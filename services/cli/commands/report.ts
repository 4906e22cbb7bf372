/**
 * How a finished run is reported: `--json` prints the RunSummary as the last line of stdout (for
 * scripts: every field, numbers as numbers, core/src/plain-json.ts), otherwise a short human
 * summary goes to stderr.
 */
import { type RunSummary, RunSummarySchema } from "../../core/gen/rlaif/common/v1/types_pb.js";
import { plainJson } from "../../core/src/plain-json.js";

/** Print a run summary (the human one to `human`, default stderr). */
export function reportSummary(
  summary: RunSummary,
  json: boolean,
  human: NodeJS.WritableStream = process.stderr,
): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(plainJson(RunSummarySchema, summary))}\n`);
    return;
  }
  const r = (x: number) => x.toFixed(3);
  human.write(
    `run ${summary.runId} (${summary.mode}): ${summary.steps} steps, ${summary.trajectories} trajectories, ` +
      `reward ${r(summary.firstMeanReward)} → ${r(summary.lastMeanReward)}, KL ${r(summary.finalKl)} nats, ` +
      `weights v${summary.finalWeightsVersion}, ${summary.wallSeconds.toFixed(1)} s` +
      `${summary.checkpointPath ? `\nfinal checkpoint: ${summary.checkpointPath}` : ""}\n`,
  );
}
