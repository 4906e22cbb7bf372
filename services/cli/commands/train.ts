/**
 * `rlaif train`: a whole RLAIF run in one process — Policy, Rollout, Feedback and Optimizer as
 * gRPC servers on loopback over the in-memory bus (or NATS with --nats).
 */

import { startEmbeddedCluster } from "../../cluster/embedded-cluster.js";
import { RlaifError } from "../../core/src/errors.js";
import type { CommandRun } from "../args.js";
import { createProgress } from "../progress.js";
import { reportSummary } from "./report.js";
import { requireCheckpoint } from "./shared-flags.js";

/** What `rlaif train` does (its command line is declared in specs.ts). */
export const trainCommand: CommandRun = {
  async run({ config, flags }) {
    requireCheckpoint(config.services.checkpoint);
    const progress = createProgress(config.run.steps);
    const cluster = await startEmbeddedCluster(config, (line) => progress.log(line));
    try {
      progress.log(
        `rlaif train: ${config.run.steps} steps × ${config.run.promptsPerStep} prompts × ${config.run.samplesPerPrompt} samples, ` +
          `feedback at ${cluster.feedbackAddress}, bus ${config.services.natsUrl || "in-memory"}`,
      );
      const run = await cluster.optimizer.runs.start(config.run);
      run.watchers.add((m) => m && progress.step(m));
      const summary = await run.done;
      progress.done();
      if (!summary) throw new RlaifError(`run ${run.runId} failed: ${run.error}`);
      reportSummary(summary, flags.json === true);
    } finally {
      await cluster.close();
    }
  },
};
