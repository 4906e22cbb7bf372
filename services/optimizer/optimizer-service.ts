/**
 * rlaif.optimizer.v1.OptimizerService handlers over a RunController. A RunConfig's zero fields
 * take the configured defaults, so callers in other languages only set what they change.
 */
import { create, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { RunConfigSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { OptimizerService } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { RunSettings } from "../core/src/config/defaults.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
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
  };
}

/** The OptimizerService handlers. */
export function optimizerService(
  runs: RunController,
  base: RunSettings,
): ServiceImpl<typeof OptimizerService> {
  return {
    async startRun(req) {
      const run = await runs.start(
        settingsFromRunConfig(req.config ?? create(RunConfigSchema), base),
        req.runId || undefined,
      );
      return { runId: run.runId };
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
  };
}
