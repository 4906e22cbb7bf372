/**
 * `rlaif train`: a whole RLAIF run in one process — Policy, Rollout, Feedback and Optimizer as
 * gRPC servers on loopback over the in-memory bus (or NATS with --nats). With `--resume` it
 * continues a run from its checkpoint instead (services/optimizer/run-checkpoint.ts).
 */

import { resolve } from "node:path";
import { startEmbeddedCluster } from "../../cluster/embedded-cluster.js";
import { explicitSettings } from "../../core/src/config/load-config.js";
import type { RlaifConfig, RunSettings } from "../../core/src/config/settings.js";
import { SETTINGS } from "../../core/src/config/settings.js";
import { CheckpointError, ConfigError, RlaifError } from "../../core/src/errors.js";
import { loadCheckpoint } from "../../core/src/model/checkpoint.js";
import { checkSameModel, resumeSettings } from "../../optimizer/resume-settings.js";
import { openResumeCheckpoint, type RunCheckpoint } from "../../optimizer/run-checkpoint.js";
import type { CommandRun } from "../args.js";
import { createProgress } from "../progress.js";
import { reportSummary } from "./report.js";
import { requireCheckpoint } from "./shared-flags.js";

/** A run to resume: its checkpoint and the settings it continues with. */
interface ResumeTarget {
  checkpoint: RunCheckpoint;
  settings: RunSettings;
}

function flagOf(key: keyof RunSettings): string {
  const s = SETTINGS.find((x) => x.path === `run.${key}`);
  return s ? `--${s.flag}` : `run.${key}`;
}

/**
 * What `--resume <from>` continues, checked before any service starts. The run keeps its saved
 * settings: a flag or config-file value that differs is refused unless it is one a resumed run
 * may change (steps, checkpoint-every, checkpoint-keep); an explicit --checkpoint must hold the
 * same model. The services then start from the run's own checkpoint.
 */
export async function resumeTarget(
  config: RlaifConfig,
  from: string,
  log?: (line: string) => void,
): Promise<ResumeTarget> {
  let checkpoint: RunCheckpoint;
  try {
    checkpoint = await openResumeCheckpoint(resolve(from), log);
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    throw new ConfigError(
      `--resume: ${err.message} — pass a run directory (runs/<run id>) or one of its step-<n>.safetensors files`,
    );
  }
  const explicit = explicitSettings(config);
  const requested: Partial<Record<keyof RunSettings, unknown>> = {};
  for (const key of Object.keys(config.run) as (keyof RunSettings)[]) {
    if (explicit.has(`run.${key}`)) requested[key] = config.run[key];
  }
  const settings = resumeSettings(
    checkpoint.settings,
    requested as Partial<RunSettings>,
    checkpoint.step,
    flagOf,
  );
  if (explicit.has("services.checkpoint")) {
    const start = await loadCheckpoint(config.services.checkpoint).catch((err: Error) => {
      throw new ConfigError(`--checkpoint: ${err.message}`);
    });
    checkSameModel("--checkpoint", checkpoint.model, start, config.services.checkpoint);
  }
  return { checkpoint, settings };
}

/** What `rlaif train` does (its command line is declared in specs.ts). */
export const trainCommand: CommandRun = {
  async run({ config, flags }) {
    const resume = typeof flags.resume === "string" ? await resumeTarget(config, flags.resume) : null;
    // A resumed run's Policy starts from the run's own weights (same model as the learner's).
    if (resume) config.services.checkpoint = resume.checkpoint.path;
    requireCheckpoint(config.services.checkpoint);
    const settings = resume?.settings ?? config.run;
    const progress = createProgress(settings.steps);
    const cluster = await startEmbeddedCluster(config, (line) => progress.log(line));
    try {
      progress.log(
        `rlaif train: ${resume ? `resuming ${resume.checkpoint.runId} at step ${resume.checkpoint.step} of ` : ""}` +
          `${settings.steps} steps × ${settings.promptsPerStep} prompts × ${settings.samplesPerPrompt} samples, ` +
          `feedback at ${cluster.feedbackAddress}, bus ${config.services.natsUrl || "in-memory"}`,
      );
      const runs = cluster.optimizer.runs;
      const run = resume
        ? await runs.resume(resume.checkpoint, resume.settings)
        : await runs.start(config.run);
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
