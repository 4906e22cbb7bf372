/**
 * rlaif.optimizer.v1.OptimizerService handlers over a RunController. A RunConfig's zero fields
 * take the configured defaults, so callers in other languages only set what they change.
 */
import { isAbsolute, relative, resolve } from "node:path";
import { create, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { RunConfigSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { OptimizerService, type StartRunRequest } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { RunSettings } from "../core/src/config/defaults.js";
import { CheckpointError, ValidationError } from "../core/src/errors.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
import type { ModelConfig, ModelKind } from "../core/src/model/causal-lm.js";
import { checkSameModel, resumeSettings } from "./resume-settings.js";
import { openResumeCheckpoint, type RunCheckpoint } from "./run-checkpoint.js";
import type { RunController } from "./run-controller.js";

/** Run settings from an API RunConfig: set fields win, zero fields keep `base`. */
export function settingsFromRunConfig(
  c: MessageShape<typeof RunConfigSchema>,
  base: RunSettings,
): RunSettings {
  const s = c.sampling;
  // Sampling params use 0 for "server default" (proto3 scalars); RunConfig scalars have presence.
  const or = <T>(v: T, fallback: T): T => (v ? v : fallback);
  return {
    ...base,
    steps: c.steps ?? base.steps,
    promptsPerStep: c.promptsPerStep ?? base.promptsPerStep,
    samplesPerPrompt: c.samplesPerPrompt ?? base.samplesPerPrompt,
    learningRate: c.learningRate ?? base.learningRate,
    gamma: c.gamma ?? base.gamma,
    klCoef: c.klCoef ?? base.klCoef,
    entropyCoef: c.entropyCoef ?? base.entropyCoef,
    maxGradNorm: c.maxGradNorm ?? base.maxGradNorm,
    baselineDecay: c.baselineDecay ?? base.baselineDecay,
    // String choices are validated by grpc/rules.ts; unset or "" keeps the default.
    baseline: (c.baseline || base.baseline) as RunSettings["baseline"],
    klIn: (c.klIn || base.klIn) as RunSettings["klIn"],
    klEstimator: (c.klEstimator || base.klEstimator) as RunSettings["klEstimator"],
    klTarget: c.klTarget ?? base.klTarget,
    klHorizon: c.klHorizon ?? base.klHorizon,
    weightDecay: c.weightDecay ?? base.weightDecay,
    warmupSteps: c.warmupSteps ?? base.warmupSteps,
    lrDecay: (c.lrDecay || base.lrDecay) as RunSettings["lrDecay"],
    offPolicy: (c.offPolicy || base.offPolicy) as RunSettings["offPolicy"],
    clipEpsilon: c.clipEpsilon ?? base.clipEpsilon,
    truncation: c.truncation ?? base.truncation,
    publishEvery: c.publishEvery ?? base.publishEvery,
    seed: c.seed !== undefined ? Number(c.seed & 0xffffffffn) : base.seed,
    maxNewTokens: or(s?.maxNewTokens ?? 0, base.maxNewTokens),
    temperature: s ? s.temperature : base.temperature,
    topK: s ? s.topK : base.topK,
    topP: or(s?.topP ?? 0, base.topP),
    prompts: c.prompts.length ? [...c.prompts] : base.prompts,
    checkpointEvery: c.checkpointEvery ?? base.checkpointEvery,
    checkpointKeep: c.checkpointKeep ?? base.checkpointKeep,
  };
}

const SAMPLING_KEYS = new Set(["maxNewTokens", "temperature", "topK", "topP"]);

/** The API path of a run setting, for error messages: `config.learning_rate`, `config.sampling.top_k`. */
export function runConfigField(key: keyof RunSettings): string {
  const snake = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return SAMPLING_KEYS.has(key) ? `config.sampling.${snake}` : `config.${snake}`;
}

/**
 * The path StartRun's `resume_from` names: a run id or a path, relative to the output directory
 * and inside it. Why confined: a caller on the network must not make the Optimizer read (and
 * then write next to) arbitrary files.
 */
export function resumePath(outDir: string, value: string): string {
  const root = resolve(outDir);
  const path = resolve(root, value);
  const rel = relative(root, path);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) {
    throw new ValidationError(
      "resume_from",
      `must be a run id, or a run directory or checkpoint inside the Optimizer's output directory ${root}, got "${value}"`,
    );
  }
  return path;
}

/** What the handlers need besides the runs. */
export interface OptimizerServiceOptions {
  /** The model new runs start from, so a resumed run of another model is refused. */
  model?: () => Promise<{ kind: ModelKind; config: ModelConfig }>;
  log?: (line: string) => void;
}

async function resumeRun(runs: RunController, req: StartRunRequest, opts: OptimizerServiceOptions) {
  let checkpoint: RunCheckpoint;
  try {
    checkpoint = await openResumeCheckpoint(resumePath(runs.outDir, req.resumeFrom), opts.log);
  } catch (err) {
    if (err instanceof CheckpointError) throw new ValidationError("resume_from", err.message);
    throw err;
  }
  if (req.runId && req.runId !== checkpoint.runId) {
    throw new ValidationError(
      "run_id",
      `is "${req.runId}" but the checkpoint is of run "${checkpoint.runId}": leave it empty when resuming`,
    );
  }
  if (opts.model) {
    checkSameModel("resume_from", checkpoint.model, await opts.model(), "this Optimizer's checkpoint");
  }
  const requested = settingsFromRunConfig(req.config ?? create(RunConfigSchema), checkpoint.settings);
  const settings = resumeSettings(checkpoint.settings, requested, checkpoint.step, runConfigField);
  const run = await runs.resume(checkpoint, settings);
  return { runId: run.runId, resumedFromStep: checkpoint.step };
}

/** The OptimizerService handlers. */
export function optimizerService(
  runs: RunController,
  base: RunSettings,
  opts: OptimizerServiceOptions = {},
): ServiceImpl<typeof OptimizerService> {
  return {
    async startRun(req) {
      if (req.resumeFrom) return resumeRun(runs, req, opts);
      const run = await runs.start(
        settingsFromRunConfig(req.config ?? create(RunConfigSchema), base),
        req.runId || undefined,
      );
      return { runId: run.runId, resumedFromStep: 0 };
    },
    getStatus(req) {
      const run = runs.get(req.runId);
      const last = runs.lastMetrics(run);
      return {
        runId: run.runId,
        state: run.state,
        step: run.driver.step,
        error: run.error,
        ...(last ? { lastMetrics: last } : {}),
        ...(run.summary ? { summary: run.summary } : {}),
      };
    },
    async *watchMetrics(req, ctx) {
      for await (const metrics of runs.watch(req.runId, ctx.signal)) yield { metrics };
    },
    async checkpoint(req) {
      const c = await runs.checkpoint(req.runId);
      return { path: c.path, step: c.step, weightsVersion: BigInt(c.weightsVersion), sha256: c.sha256 };
    },
    pauseRun(req) {
      return { state: runs.setPaused(req.runId, true) };
    },
    resumeRun(req) {
      return { state: runs.setPaused(req.runId, false) };
    },
  };
}

export { OptimizerService };

/** The API RunConfig of run settings (every field set), for clients such as `rlaif up`. */
export function runConfigFromSettings(s: RunSettings): MessageInitShape<typeof RunConfigSchema> {
  return {
    steps: s.steps,
    promptsPerStep: s.promptsPerStep,
    samplesPerPrompt: s.samplesPerPrompt,
    sampling: { maxNewTokens: s.maxNewTokens, temperature: s.temperature, topK: s.topK, topP: s.topP },
    learningRate: s.learningRate,
    gamma: s.gamma,
    klCoef: s.klCoef,
    maxGradNorm: s.maxGradNorm,
    publishEvery: s.publishEvery,
    seed: BigInt(s.seed),
    prompts: s.prompts,
    baselineDecay: s.baselineDecay,
    entropyCoef: s.entropyCoef,
    baseline: s.baseline,
    klIn: s.klIn,
    klEstimator: s.klEstimator,
    klTarget: s.klTarget,
    klHorizon: s.klHorizon,
    weightDecay: s.weightDecay,
    warmupSteps: s.warmupSteps,
    lrDecay: s.lrDecay,
    offPolicy: s.offPolicy,
    clipEpsilon: s.clipEpsilon,
    truncation: s.truncation,
    checkpointEvery: s.checkpointEvery,
    checkpointKeep: s.checkpointKeep,
  };
}
