/**
 * rlaif.optimizer.v1.OptimizerService handlers over a RunController. A RunConfig's unset fields
 * take the configured defaults (config/run-config.ts), so callers in other languages only set
 * what they change.
 */
import { isAbsolute, relative, resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { RunConfigSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { OptimizerService, type StartRunRequest } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { runConfigField, settingsFromRunConfig } from "../core/src/config/run-config.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { CheckpointError, RpcError, ValidationError } from "../core/src/errors.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
import type { ModelConfig, ModelKind } from "../core/src/model/causal-lm.js";
import { checkSameModel, resumeSettings } from "./resume-settings.js";
import { openResumeCheckpoint, type RunCheckpoint } from "./run-checkpoint.js";
import type { RunController } from "./run-controller.js";

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

/** ListRuns page size when the request leaves it at 0. */
const DEFAULT_PAGE_SIZE = 100;

/** What the handlers need besides the runs. */
export interface OptimizerServiceOptions {
  /** The model new runs start from, so a resumed run of another model is refused. */
  model?: () => Promise<{ kind: ModelKind; config: ModelConfig }>;
  /**
   * True once the Optimizer is shutting down: a WatchMetrics whose run was stopped by the
   * shutdown then ends UNAVAILABLE, not OK, so its client waits for the Optimizer to come back
   * (and resume the run) instead of taking the stop for the run's end.
   */
  stopping?: () => boolean;
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
      const run = runs.view(req.runId);
      const last = runs.lastMetrics(run);
      return {
        runId: run.runId,
        state: run.state,
        step: run.step,
        error: run.error,
        ...(last ? { lastMetrics: last } : {}),
        ...(run.summary ? { summary: run.summary } : {}),
      };
    },
    async *watchMetrics(req, ctx) {
      for await (const metrics of runs.watch(req.runId, ctx.signal, req.fromStep)) yield { metrics };
      if (opts.stopping?.()) {
        throw new RpcError(
          status.UNAVAILABLE,
          "the Optimizer is shutting down; the run stays resumable from its last checkpoint",
        );
      }
    },
    async checkpoint(req) {
      const c = await runs.checkpoint(req.runId);
      return { path: c.path, step: c.step, weightsVersion: BigInt(c.weightsVersion), sha256: c.sha256 };
    },
    listRuns(req) {
      const all = runs.list();
      const start = req.pageToken ? Number(req.pageToken) : 0;
      const end = start + (req.pageSize || DEFAULT_PAGE_SIZE);
      return {
        runs: all.slice(start, end).map((r) => ({
          runId: r.runId,
          state: r.state,
          step: r.step,
          steps: r.steps,
          startedUnixMs: BigInt(r.startedUnixMs),
          error: r.error,
        })),
        nextPageToken: end < all.length ? String(end) : "",
      };
    },
    pauseRun(req) {
      return { state: runs.setPaused(req.runId, true) };
    },
    unpauseRun(req) {
      return { state: runs.setPaused(req.runId, false) };
    },
    async cancelRun(req) {
      const run = await runs.cancel(req.runId);
      return { state: run.state, step: run.step };
    },
  };
}

export { OptimizerService };
