/**
 * The Optimizer's run API for callers in the same process (`rlaif train`): plan a resume, start
 * or resume a run, follow its metrics and await its summary. Why a module of its own: the run
 * controller's records (watchers, drivers, resume points) can change shape freely as long as
 * these few functions keep theirs. Clients in other processes use the gRPC API instead
 * (core/src/config/run-config.ts builds its RunConfig from run settings).
 */
import { resolve } from "node:path";
import type { RunSummary, StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { RunFailedError, ValidationError } from "../core/src/errors.js";
import { loadModelInfo } from "../core/src/model/model-source.js";
import type { OptimizerServer } from "./main.js";
import { checkSameModel, resumeSettings } from "./resume-settings.js";
import { openResumeCheckpoint, type RunCheckpoint } from "./run-checkpoint.js";
import type { RunRecord } from "./run-controller.js";
import type { RunProvenance } from "./run-files.js";

/** A run to resume, checked before any service starts (from {@link planResume}). */
export interface ResumePlan {
  /** The run's id (it keeps its id and directory). */
  readonly runId: string;
  /** Steps the checkpoint has applied; the run goes on at the next. */
  readonly step: number;
  /** The resumable checkpoint file (a Policy serving the run's weights starts from it). */
  readonly path: string;
  /** The settings it continues with: the saved ones, with the changes a resumed run may make. */
  readonly settings: RunSettings;
  /** The checkpoint as read. */
  readonly checkpoint: RunCheckpoint;
}

/** How {@link planResume} names things in its errors, and what it checks. */
export interface ResumeOptions {
  /** The caller's name of a setting (a flag such as `--lr`), for "you may not change it" errors. */
  name: (key: keyof RunSettings) => string;
  /** A checkpoint the caller asked for explicitly: it must hold the run's model. */
  sameModelAs?: { field: string; path: string };
  log?: (line: string) => void;
}

/**
 * The run `from` names (a run directory: its newest readable step checkpoint; or a
 * step-<n>.safetensors file), with `requested` changes applied. Throws CheckpointError when
 * `from` cannot be resumed, ValidationError (field from `name`) when a requested change is not
 * allowed or the model differs from `sameModelAs`.
 */
export async function planResume(
  from: string,
  requested: Partial<RunSettings>,
  opts: ResumeOptions,
): Promise<ResumePlan> {
  const checkpoint = await openResumeCheckpoint(resolve(from), opts.log);
  const settings = resumeSettings(checkpoint.settings, requested, checkpoint.step, opts.name);
  if (opts.sameModelAs) {
    const { field, path } = opts.sameModelAs;
    const start = await loadModelInfo(path).catch((err: Error) => {
      throw new ValidationError(field, err.message);
    });
    checkSameModel(field, checkpoint.model, start, path);
  }
  return { runId: checkpoint.runId, step: checkpoint.step, path: checkpoint.path, settings, checkpoint };
}

/** A run started by {@link startRun}. */
export interface RunHandle {
  readonly runId: string;
  /** Step it was resumed from (0 for a new run). */
  readonly resumedFromStep: number;
  /** The run's settings (prompts resolved). */
  readonly settings: RunSettings;
  /** Its directory (config.json, metrics.jsonl, checkpoints). */
  readonly dir: string;
  /** What its config.json records about where it came from. */
  readonly provenance: RunProvenance | undefined;
  /**
   * Every step's metrics from the first (a resumed run's earlier steps included), then live
   * ones; ends when the run ends. Each call is an independent reader.
   */
  metrics(): AsyncIterable<StepMetrics>;
  /** The summary once the run has succeeded; rejects with RunFailedError when it failed. */
  result(): Promise<RunSummary>;
}

/** What to run: new settings, or a planned resume. */
export type RunRequest = { settings: RunSettings } | { resume: ResumePlan };

function handle(optimizer: OptimizerServer, run: RunRecord): RunHandle {
  return {
    runId: run.runId,
    resumedFromStep: run.resumedFromStep,
    settings: run.settings,
    dir: run.dir,
    provenance: run.provenance,
    async *metrics() {
      const stop = new AbortController();
      try {
        yield* optimizer.runs.watch(run.runId, stop.signal);
      } finally {
        stop.abort();
      }
    },
    async result() {
      const summary = await run.done;
      if (!summary) throw new RunFailedError(`run ${run.runId} failed: ${run.error}`);
      return summary;
    },
  };
}

/**
 * Start a run on this Optimizer (or resume the planned one). Rejects like StartRun: while
 * another run is active, or when the prompts do not fit the model.
 */
export async function startRun(optimizer: OptimizerServer, request: RunRequest): Promise<RunHandle> {
  const run =
    "resume" in request
      ? await optimizer.runs.resume(request.resume.checkpoint, request.resume.settings)
      : await optimizer.runs.start(request.settings);
  return handle(optimizer, run);
}
