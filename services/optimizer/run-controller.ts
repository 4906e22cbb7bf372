/**
 * Owns the Optimizer's runs: starts (or resumes) one at a time, tracks its state, fans its
 * metrics out to watchers, writes its files under `<out>/<runId>/`: config.json, metrics.jsonl,
 * resumable `step-<n>.safetensors` every checkpointEvery steps (run-checkpoint.ts) and
 * final.safetensors, the trained policy.
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  type RunSummary,
  type StepMetrics,
  StepMetricsSchema,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import { RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { NotFoundError, PreconditionError, RunCancelledError } from "../core/src/errors.js";
import { tokenizerOfDescription } from "../core/src/model/hf-origin.js";
import type { WeightsPublisher } from "../core/src/weights/weights-publisher.js";
import { type EndedRun, loadEndedRuns, markRunEnded } from "./ended-runs.js";
import {
  pruneRunCheckpoints,
  type RunCheckpoint,
  type WrittenCheckpoint,
  writeRunCheckpoint,
} from "./run-checkpoint.js";
import { type Learner, type ResumePoint, RunDriver } from "./run-driver.js";
import {
  FINAL_CHECKPOINT,
  METRICS_FILE,
  metricsLine,
  metricsUpTo,
  type RunProvenance,
  writeRunConfig,
} from "./run-files.js";
import { checkPromptsFit, newRunId } from "./run-helpers.js";
import { type ProvenanceContext, recordScorers, runProvenance } from "./run-provenance.js";
import type { StartRecord } from "./run-restart.js";
import { endedView, liveView, type RunView } from "./run-view.js";
import { watchRun } from "./run-watch.js";
import { SAMPLES_FILE, samplesLine, samplesUpTo, stepSamples } from "./step-samples.js";

export { checkPromptsFit, newRunId, type RunView };

/**
 * Builds the learner of a run: from the configured starting checkpoint, or, with `resumeFrom`,
 * from that resumable checkpoint with its optimiser and learner state.
 */
export type LearnerFactory = (settings: RunSettings, resumeFrom?: string) => Promise<Learner>;

/** Everything known about one run. */
export interface RunRecord {
  runId: string;
  state: RunState;
  driver: RunDriver;
  learner: Learner;
  dir: string;
  /** The run's settings, prompts resolved. */
  settings: RunSettings;
  /** Step of the checkpoint it was resumed from (0 for a run started afresh). */
  resumedFromStep: number;
  summary: RunSummary | null;
  error: string;
  /** Resolves when the run has ended (either way). */
  done: Promise<RunSummary | null>;
  /** Set by {@link RunController.cancel}: the run is to end CANCELLED, not FAILED. */
  cancelRequested: boolean;
  /** When it was started or resumed here, ms since the Unix epoch. */
  startedUnixMs: number;
  /** Called with each new step's metrics and once with null at the end. */
  watchers: Set<(m: StepMetrics | null) => void>;
  /** Where the run came from (config.json's `provenance`), when the controller was told. */
  provenance?: RunProvenance;
}

/** Options of the controller. */
export interface RunControllerOptions {
  bus: Bus;
  /** Publishes every run's weights (signing, retention); absent: unsigned, nothing deleted. */
  weights?: WeightsPublisher;
  newLearner: LearnerFactory;
  /** Directory under which each run gets `<runId>/`. */
  outDir: string;
  /** Max wait for a step's trajectories. */
  stepTimeoutMs: number;
  /** Prompts to use when a run's config has none. */
  defaultPrompts: () => string[];
  mode: string;
  /** What to record as each run's provenance in its config.json (run-provenance.ts). */
  provenance?: ProvenanceContext;
  log?: (line: string) => void;
}

/** Starts and tracks runs. */
export class RunController {
  private readonly runs = new Map<string, RunRecord>();
  private latest: RunRecord | null = null;
  /** Runs that ended before this controller started (their ended.json), not run here since. */
  private readonly ended = new Map<string, EndedRun>();

  constructor(private readonly opts: RunControllerOptions) {}

  /** Directory under which runs get theirs. */
  get outDir(): string {
    return this.opts.outDir;
  }

  /**
   * Learn the runs that ended under the output directory before this controller started, so
   * GetStatus, ListRuns and WatchMetrics answer for them too; resolves with how many.
   */
  async loadEnded(): Promise<number> {
    const found = await loadEndedRuns(this.opts.outDir, this.opts.log);
    for (const run of found) if (!this.runs.has(run.runId)) this.ended.set(run.runId, run);
    return found.length;
  }

  /**
   * The run with this id, or the most recent one for "", run here: NotFoundError when there is
   * none, PreconditionError when it ended before this controller started (it can only be read).
   */
  get(runId: string): RunRecord {
    const run = runId ? this.runs.get(runId) : this.latest;
    if (run) return run;
    const ended = runId ? this.ended.get(runId) : this.newestEnded();
    if (ended) {
      throw new PreconditionError(
        `run ${ended.runId} ended (${RunState[ended.state]}) before this Optimizer started; its files are in ${ended.dir}`,
      );
    }
    throw new NotFoundError(runId ? `no run with id "${runId}"` : "no run has been started");
  }

  /** The run with this id (the most recent for ""), run here or ended earlier, as the RPCs report it. */
  view(runId: string): RunView {
    const run = runId ? this.runs.get(runId) : this.latest;
    if (run) return liveView(run);
    const ended = runId ? this.ended.get(runId) : this.newestEnded();
    if (ended) return endedView(ended);
    throw new NotFoundError(runId ? `no run with id "${runId}"` : "no run has been started");
  }

  /**
   * The directory of the most recent run (run here, else ended before this controller started),
   * or null before any: what the live report page (report-live.ts) shows.
   */
  latestDir(): string | null {
    return this.latest?.dir ?? this.newestEnded()?.dir ?? null;
  }

  private newestEnded(): EndedRun | undefined {
    return [...this.ended.values()].sort((a, b) => b.endedUnixMs - a.endedUnixMs)[0];
  }

  /** Start a run; refuses while another is running or paused. */
  async start(settings: RunSettings, runId = newRunId()): Promise<RunRecord> {
    this.checkIdle(runId, false);
    const prompts = settings.prompts.length ? settings.prompts : this.opts.defaultPrompts();
    const learner = await this.newLearner({ ...settings, prompts });
    const dir = join(this.opts.outDir, runId);
    mkdirSync(dir, { recursive: true });
    const provenance = this.opts.provenance && (await runProvenance(this.opts.provenance, dir));
    return this.launch(runId, { ...settings, prompts }, learner, dir, provenance);
  }

  /**
   * Start over, from step 0, a run that died before its first step checkpoint (`record`, from
   * its config.json: same id, directory, settings and seed; its starting weights checked by the
   * caller). What the dead attempt left is cleared: metrics lines, temp files. Its jobs go out
   * under a fresh bus run id, so any of the dead attempt's trajectories still queued are dropped
   * as a crashed attempt's (counted in dropped_in_flight), never applied.
   */
  async restart(record: StartRecord): Promise<RunRecord> {
    this.checkIdle(record.runId, true);
    const learner = await this.newLearner(record.settings);
    metricsUpTo(record.dir, 0);
    samplesUpTo(record.dir, 0);
    await pruneRunCheckpoints(record.dir, 0, 0);
    this.opts.log?.(`optimizer: restarting run ${record.runId} from step 0`);
    const provenance = this.opts.provenance && (await runProvenance(this.opts.provenance, record.dir));
    return this.launch(record.runId, record.settings, learner, record.dir, provenance, undefined, true);
  }

  /**
   * Continue a run from a resumable checkpoint (read with openResumeCheckpoint) with `settings`
   * (from resumeSettings). The run keeps its id and directory — the checkpoint's — where
   * metrics.jsonl is cut back to the checkpoint's step; its driver republishes the saved
   * reference and served weights and goes on at the next step.
   */
  async resume(checkpoint: RunCheckpoint, settings: RunSettings): Promise<RunRecord> {
    this.checkIdle(checkpoint.runId, true);
    const learner = await this.newLearner(settings, checkpoint.path);
    const dir = dirname(checkpoint.path);
    const history = metricsUpTo(dir, checkpoint.step);
    samplesUpTo(dir, checkpoint.step);
    // Temp files of a killed write, and step files past the resume point (unreadable, or of an
    // attempt not continued), which the resumed steps would overwrite anyway.
    await pruneRunCheckpoints(dir, 0, checkpoint.step);
    this.opts.log?.(
      `optimizer: resuming run ${checkpoint.runId} at step ${checkpoint.step} from ${checkpoint.path}`,
    );
    const provenance =
      this.opts.provenance &&
      (await runProvenance(this.opts.provenance, dir, { path: checkpoint.path, step: checkpoint.step }));
    return this.launch(checkpoint.runId, settings, learner, dir, provenance, {
      ...checkpoint.resume,
      history,
    });
  }

  private checkIdle(runId: string, resuming: boolean): void {
    const active = this.latest;
    if (active && (active.state === RunState.RUNNING || active.state === RunState.PAUSED)) {
      throw new PreconditionError(
        `run ${active.runId} is still active; wait for it or start this one elsewhere`,
      );
    }
    // A resumed run may take over the record of its own earlier, ended attempt.
    if ((this.runs.has(runId) || this.ended.has(runId)) && !resuming) {
      throw new PreconditionError(`a run with id "${runId}" already exists`);
    }
  }

  /** The learner, checked against the prompts; only the latest run keeps a model in memory. */
  private async newLearner(settings: RunSettings, resumeFrom?: string): Promise<Learner> {
    this.latest?.learner.dispose();
    const learner = await this.opts.newLearner(settings, resumeFrom);
    try {
      const tok = learner.tokenizer ? tokenizerOfDescription(learner.tokenizer) : undefined;
      checkPromptsFit(settings.prompts, learner.contextLength, tok);
    } catch (err) {
      learner.dispose();
      throw err;
    }
    return learner;
  }

  private launch(
    runId: string,
    settings: RunSettings,
    learner: Learner,
    dir: string,
    provenance: RunProvenance | undefined,
    resume?: ResumePoint,
    restarted = false,
  ): RunRecord {
    writeRunConfig(dir, runId, settings, settings.prompts, provenance);
    // The scorers of the trajectories each update uses go into config.json as they appear.
    const observed = provenance
      ? recordScorers(learner, provenance, () =>
          writeRunConfig(dir, runId, settings, settings.prompts, provenance),
        )
      : learner;
    const record: RunRecord = {
      runId,
      state: RunState.RUNNING,
      learner,
      dir,
      settings,
      resumedFromStep: resume?.step ?? 0,
      summary: null,
      error: "",
      cancelRequested: false,
      startedUnixMs: Date.now(),
      watchers: new Set(),
      ...(provenance ? { provenance } : {}),
      done: Promise.resolve(null),
      driver: new RunDriver(this.opts.bus, observed, {
        runId,
        settings,
        prompts: settings.prompts,
        stepTimeoutMs: this.opts.stepTimeoutMs,
        mode: this.opts.mode,
        onSamples: (step, trajs) => {
          appendFileSync(join(dir, SAMPLES_FILE), samplesLine(stepSamples(step, trajs)));
        },
        onMetrics: (m) => {
          appendFileSync(join(dir, METRICS_FILE), metricsLine(m));
          for (const w of record.watchers) w(m);
        },
        onStepEnd: async (step) => {
          const every = settings.checkpointEvery;
          if (step === settings.steps || (every > 0 && step % every === 0))
            await this.writeCheckpoint(record);
        },
        ...(resume ? { resume } : {}),
        ...(restarted ? { restarted } : {}),
        ...(this.opts.weights ? { weights: this.opts.weights } : {}),
        ...(this.opts.log ? { log: this.opts.log } : {}),
      }),
    };
    record.done = this.drive(record);
    this.ended.delete(runId);
    this.runs.set(runId, record);
    this.latest = record;
    return record;
  }

  /** The resumable checkpoint of the run's current step, then older ones pruned. */
  private async writeCheckpoint(run: RunRecord): Promise<WrittenCheckpoint> {
    const written = await writeRunCheckpoint(run.dir, run);
    await pruneRunCheckpoints(run.dir, run.settings.checkpointKeep);
    return written;
  }

  private async drive(run: RunRecord): Promise<RunSummary | null> {
    // Stopped by dispose() (shutdown), not ended: the run stays resumable by --resume-unfinished.
    let stopped = false;
    try {
      const summary = await run.driver.run();
      const path = join(run.dir, FINAL_CHECKPOINT);
      await run.learner.saveCheckpoint(path, { runId: run.runId, step: String(summary.steps) });
      summary.checkpointPath = path;
      run.summary = summary;
      run.state = RunState.SUCCEEDED;
      return summary;
    } catch (err) {
      // Only CancelRun ends a run CANCELLED; a driver stopped otherwise (shutdown) has failed.
      if (err instanceof RunCancelledError && run.cancelRequested) {
        // The step in progress is abandoned (its trajectories are never applied); the last
        // completed step stays resumable.
        if (run.driver.step > 0) await this.writeCheckpoint(run);
        run.state = RunState.CANCELLED;
        this.opts.log?.(`optimizer: ${err.message}`);
        return null;
      }
      stopped = err instanceof RunCancelledError;
      run.error = (err as Error).message;
      run.state = RunState.FAILED;
      this.opts.log?.(
        stopped
          ? `optimizer: ${run.error} (stopped, not ended: resumable from its last checkpoint)`
          : `optimizer: run ${run.runId} failed: ${run.error}`,
      );
      return null;
    } finally {
      if (!stopped) {
        markRunEnded(
          run.dir,
          {
            state: RunState[run.state],
            step: run.driver.step,
            error: run.error,
            steps: run.settings.steps,
            startedUnixMs: run.startedUnixMs,
            summary: run.summary,
          },
          this.opts.log,
        );
      }
      for (const w of run.watchers) w(null);
    }
  }

  /** Every step's metrics from `fromStep` (1-based; 0 = the first), then live ones, until the run ends. */
  async *watch(runId: string, signal: AbortSignal, fromStep = 0): AsyncGenerator<StepMetrics> {
    if (!(runId ? this.runs.has(runId) : this.latest)) {
      // Ended before this controller started: its recorded steps, and the stream ends.
      for (const m of this.view(runId).history()) if (m.step >= fromStep) yield m;
      return;
    }
    yield* watchRun(this.get(runId), signal, fromStep);
  }

  /**
   * Write a resumable checkpoint of the run under its directory, between two steps (a step in
   * progress is finished first), so weights, optimiser state and counters are of one step.
   */
  async checkpoint(runId: string): Promise<WrittenCheckpoint> {
    const run = this.get(runId);
    return run.driver.atStepBoundary(() => this.writeCheckpoint(run));
  }

  /** Pause or resume a run between steps. */
  setPaused(runId: string, paused: boolean): RunState {
    const run = this.get(runId);
    if (run.state !== RunState.RUNNING && run.state !== RunState.PAUSED) {
      throw new PreconditionError(`run ${run.runId} has ended (${RunState[run.state]})`);
    }
    run.driver.paused = paused;
    run.state = paused ? RunState.PAUSED : RunState.RUNNING;
    return run.state;
  }

  /**
   * Stop a run for good (CancelRun): the step in progress is abandoned and the run ends
   * CANCELLED with its last completed step checkpointed. Resolves once it has ended; a run that
   * had already ended (here or before this controller started) is left as it was.
   */
  async cancel(runId: string): Promise<RunView> {
    const known = runId ? this.runs.has(runId) : this.latest !== null;
    if (!known) return this.view(runId);
    const run = this.get(runId);
    if (run.state === RunState.RUNNING || run.state === RunState.PAUSED) {
      run.cancelRequested = true;
      run.driver.cancel();
      await run.done;
    }
    return liveView(run);
  }

  /** Runs known here (run here, or ended before this controller started), newest first. */
  list(): RunView[] {
    const views = [...[...this.runs.values()].map(liveView), ...[...this.ended.values()].map(endedView)];
    return views.sort((a, b) => b.startedUnixMs - a.startedUnixMs);
  }

  /** Cancel the latest run if it is still going, wait for it to end, and free its model. */
  async dispose(): Promise<void> {
    const run = this.latest;
    if (!run) return;
    run.driver.cancel();
    await run.done;
    run.learner.dispose();
  }

  /** Last metrics of a run, as a fresh message (or undefined before the first step). */
  lastMetrics(run: RunView): StepMetrics | undefined {
    const m = run.history().at(-1);
    return m ? create(StepMetricsSchema, m) : undefined;
  }
}
