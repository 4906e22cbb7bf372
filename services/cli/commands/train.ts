/**
 * `rlaif train`: a whole RLAIF run in one process — Policy, Rollout, Feedback and Optimizer as
 * gRPC servers on loopback over the in-memory bus (or NATS with --nats). With `--resume` it
 * continues a run from its checkpoint instead. It drives the run through the Optimizer's run
 * API (services/optimizer/run-api.ts) only. A run that succeeds ends with the held-out report
 * (held-out-eval.ts): the starting and the final policy sampled on prompts the run never saw,
 * then the run report (report.html in the run directory, optimizer/run-report.ts).
 */
import { startEmbeddedCluster } from "../../cluster/embedded-cluster.js";
import { explicitSettings } from "../../core/src/config/load-config.js";
import { checkOneFeedback } from "../../core/src/config/scorer-flags.js";
import type { RlaifConfig, RunSettings } from "../../core/src/config/settings.js";
import { SETTINGS } from "../../core/src/config/settings.js";
import { CheckpointError, ConfigError } from "../../core/src/errors.js";
import { planResume, type ResumePlan, startRun } from "../../optimizer/run-api.js";
import { writeRunReport } from "../../optimizer/run-report.js";
import type { CommandRun, ParsedCommand } from "../args.js";
import { followRun } from "../follow-run.js";
import { type FinishedRun, parseEvalPrompts, reportHeldOut } from "../held-out-eval.js";
import { checkFeedback } from "../preflight.js";
import { startTrainTelemetry, type TrainTelemetry } from "../train-telemetry.js";
import { kilobytes } from "./run-report.js";
import { requireModel } from "./shared-flags.js";

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
): Promise<ResumePlan> {
  const explicit = explicitSettings(config);
  const requested: Partial<Record<keyof RunSettings, unknown>> = {};
  for (const key of Object.keys(config.run) as (keyof RunSettings)[]) {
    if (explicit.has(`run.${key}`)) requested[key] = config.run[key];
  }
  try {
    return await planResume(from, requested as Partial<RunSettings>, {
      name: flagOf,
      ...(explicit.has("services.checkpoint")
        ? { sameModelAs: { field: "--checkpoint", path: config.services.checkpoint } }
        : {}),
      ...(log ? { log } : {}),
    });
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    throw new ConfigError(
      `--resume: ${err.message} — pass a run directory (runs/<run id>) or one of its step-<n>.safetensors files`,
    );
  }
}

/** What `rlaif train` does (its command line is declared in specs.ts). */
export const trainCommand: CommandRun = {
  async run({ config, flags }) {
    const evalPrompts = parseEvalPrompts(flags["eval-prompts"]);
    // --log-format, --otlp-endpoint and --metrics-port, as `rlaif serve` has them (train-telemetry.ts).
    const telemetry = await startTrainTelemetry(config);
    try {
      await train(config, flags, evalPrompts, telemetry);
    } finally {
      await telemetry.shutdown();
    }
  },
};

/** The run itself, reporting through `telemetry`. */
async function train(
  config: RlaifConfig,
  flags: ParsedCommand["flags"],
  evalPrompts: number,
  telemetry: TrainTelemetry,
): Promise<void> {
  const { progress } = telemetry;
  const resume = typeof flags.resume === "string" ? await resumeTarget(config, flags.resume) : null;
  // A resumed run's Policy starts from the run's own weights (same model as the learner's).
  if (resume && config.services.model)
    throw new ConfigError("--resume continues the run's own model: drop --model");
  if (resume) config.services.checkpoint = resume.path;
  else requireModel(config);
  // A conflict in the flags is told before any peer is dialled.
  checkOneFeedback(config.services);
  if (config.services.feedbackAddress)
    await checkFeedback(config.services.feedbackAddress, "--feedback-address");
  const settings = resume?.settings ?? config.run;
  const cluster = await startEmbeddedCluster(
    config,
    (line) => progress.log(line),
    telemetry.policyTracing ? { policyTracing: telemetry.policyTracing } : {},
  );
  let finished: FinishedRun;
  try {
    await telemetry.serve(cluster);
    progress.log(
      `rlaif train: ${resume ? `resuming ${resume.runId} at step ${resume.step} of ` : ""}` +
        `${settings.steps} steps × ${settings.promptsPerStep} prompts × ${settings.samplesPerPrompt} samples, ` +
        `feedback at ${cluster.feedbackAddress}, bus ${config.services.natsUrl || "in-memory"}`,
    );
    const run = await startRun(cluster.optimizer, resume ? { resume } : { settings: config.run });
    const summary = await followRun(
      progress,
      {
        runId: run.runId,
        steps: run.settings.steps,
        fromStep: run.resumedFromStep,
        metrics: run.metrics(),
        result: run.result,
      },
      flags.json === true,
      telemetry.summaryOut,
    );
    finished = {
      dir: run.dir,
      seed: run.settings.seed,
      maxNewTokens: run.settings.maxNewTokens,
      // For --resume the run's first starting model may be long gone or changed: the resumed-from
      // checkpoint is the "before" (and the KL reference) the report names by its step.
      startModel: config.services.checkpoint,
      startStep: run.resumedFromStep,
      finalModel: summary.checkpointPath,
      backend: config.services.backend,
      feedbackAddress: config.services.feedbackAddress,
      feedbackRules: config.services.feedbackRules,
      rewardModel: config.services.rewardModel,
      judgeUrl: config.services.judgeUrl,
    };
  } finally {
    progress.done();
    await telemetry.closeOps();
    await cluster.close();
  }
  // After the cluster is gone: its threads' memory and cores are free for the two models.
  if (evalPrompts > 0) await reportHeldOut(finished, evalPrompts, (line) => progress.log(line));
  // Last, so that it shows the held-out samples too (docs/run-report.md).
  const report = writeRunReport(finished.dir);
  progress.log(`run report: ${report.path} (${kilobytes(report.bytes)})`);
}
