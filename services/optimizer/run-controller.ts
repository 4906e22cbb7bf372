/**
 * Owns the Optimizer's runs: starts one at a time, tracks its state, fans its metrics out to
 * watchers, writes its files (config, metrics.jsonl, checkpoints) under `<out>/<runId>/`.
 */
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, toJsonString } from "@bufbuild/protobuf";
import {
  type RunSummary,
  type StepMetrics,
  StepMetricsSchema,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import { RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import type { RunSettings } from "../core/src/config/defaults.js";
import { NotFoundError, PreconditionError, ValidationError } from "../core/src/errors.js";
import { type Learner, RunDriver } from "./run-driver.js";

/** Builds the learner of a run (loads the starting checkpoint, creates the optimiser). */
export type LearnerFactory = (settings: RunSettings) => Promise<Learner>;

/** Everything known about one run. */
export interface RunRecord {
  runId: string;
  state: RunState;
  driver: RunDriver;
  learner: Learner;
  dir: string;
  summary: RunSummary | null;
  error: string;
  /** Resolves when the run has ended (either way). */
  done: Promise<RunSummary | null>;
  /** Called with each new step's metrics and once with null at the end. */
  watchers: Set<(m: StepMetrics | null) => void>;
}

/** Options of the controller. */
export interface RunControllerOptions {
  bus: Bus;
  newLearner: LearnerFactory;
  /** Directory under which each run gets `<runId>/`. */
  outDir: string;
  /** Max wait for a step's trajectories. */
  stepTimeoutMs: number;
  /** Prompts to use when a run's config has none. */
  defaultPrompts: () => string[];
  mode: string;
  log?: (line: string) => void;
}

/** A run id for runs started without one: sortable by time, valid as a NATS token. */
export function newRunId(): string {
  return `run-${new Date()
    .toISOString()
    .replace(/[-:.TZ]/g, "")
    .slice(0, 14)}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Refuses prompts that cannot be sampled (BOS + prompt + at least one new token must fit the
 * context), so a bad prompt fails StartRun at once instead of every step that uses it.
 */
export function checkPromptsFit(prompts: readonly string[], contextLength: number): void {
  prompts.forEach((p, i) => {
    const bytes = Buffer.byteLength(p, "utf8");
    if (bytes + 2 > contextLength) {
      throw new ValidationError(
        `config.prompts[${i}]`,
        `is ${bytes} bytes; with BOS and one new token it exceeds the model's context of ${contextLength}`,
      );
    }
  });
}

/** Starts and tracks runs. */
export class RunController {
  private readonly runs = new Map<string, RunRecord>();
  private latest: RunRecord | null = null;

  constructor(private readonly opts: RunControllerOptions) {}

  /** The run with this id, or the most recent one for "". */
  get(runId: string): RunRecord {
    const run = runId ? this.runs.get(runId) : this.latest;
    if (!run) throw new NotFoundError(runId ? `no run with id "${runId}"` : "no run has been started");
    return run;
  }

  /** Start a run; refuses while another is running or paused. */
  async start(settings: RunSettings, runId = newRunId()): Promise<RunRecord> {
    const active = this.latest;
    if (active && (active.state === RunState.RUNNING || active.state === RunState.PAUSED)) {
      throw new PreconditionError(
        `run ${active.runId} is still active; wait for it or start this one elsewhere`,
      );
    }
    if (this.runs.has(runId)) throw new PreconditionError(`a run with id "${runId}" already exists`);
    // Only the latest run keeps its model in memory (for Checkpoint); free the previous one.
    active?.learner.dispose();
    const prompts = settings.prompts.length ? settings.prompts : this.opts.defaultPrompts();
    const learner = await this.opts.newLearner(settings);
    try {
      checkPromptsFit(prompts, learner.contextLength);
    } catch (err) {
      learner.dispose();
      throw err;
    }
    const dir = join(this.opts.outDir, runId);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "config.json"), `${JSON.stringify({ runId, ...settings, prompts }, null, 2)}\n`);
    const record: RunRecord = {
      runId,
      state: RunState.RUNNING,
      learner,
      dir,
      summary: null,
      error: "",
      watchers: new Set(),
      done: Promise.resolve(null),
      driver: new RunDriver(this.opts.bus, learner, {
        runId,
        settings,
        prompts,
        stepTimeoutMs: this.opts.stepTimeoutMs,
        mode: this.opts.mode,
        onMetrics: (m) => {
          appendFileSync(join(dir, "metrics.jsonl"), `${toJsonString(StepMetricsSchema, m)}\n`);
          for (const w of record.watchers) w(m);
        },
        ...(this.opts.log ? { log: this.opts.log } : {}),
      }),
    };
    record.done = this.drive(record);
    this.runs.set(runId, record);
    this.latest = record;
    return record;
  }

  private async drive(run: RunRecord): Promise<RunSummary | null> {
    try {
      const summary = await run.driver.run();
      const path = join(run.dir, "final.safetensors");
      await run.learner.saveCheckpoint(path, { runId: run.runId, step: String(summary.steps) });
      summary.checkpointPath = path;
      run.summary = summary;
      run.state = RunState.SUCCEEDED;
      return summary;
    } catch (err) {
      run.error = (err as Error).message;
      run.state = RunState.FAILED;
      this.opts.log?.(`optimizer: run ${run.runId} failed: ${run.error}`);
      return null;
    } finally {
      for (const w of run.watchers) w(null);
    }
  }

  /** Every step's metrics from the first, then live ones, until the run ends. */
  async *watch(runId: string, signal: AbortSignal): AsyncGenerator<StepMetrics> {
    const run = this.get(runId);
    const pending: (StepMetrics | null)[] = [];
    let wake: (() => void) | null = null;
    const push = (m: StepMetrics | null) => {
      pending.push(m);
      wake?.();
    };
    run.watchers.add(push);
    signal.addEventListener("abort", () => wake?.(), { once: true });
    try {
      let sent = 0;
      for (const m of run.driver.history) {
        sent++;
        yield m;
      }
      if (run.state !== RunState.RUNNING && run.state !== RunState.PAUSED) return;
      while (!signal.aborted) {
        const m = pending.shift();
        if (m === undefined) {
          await new Promise<void>((r) => {
            wake = r;
          });
          continue;
        }
        if (m === null) return;
        if (Number(m.step) > sent) {
          sent = Number(m.step);
          yield m;
        }
      }
    } finally {
      run.watchers.delete(push);
    }
  }

  /** Write a checkpoint of the run's current weights under its directory. */
  async checkpoint(
    runId: string,
  ): Promise<{ path: string; step: number; weightsVersion: number; sha256: string }> {
    const run = this.get(runId);
    const step = run.driver.step;
    const path = join(run.dir, `step-${String(step).padStart(6, "0")}.safetensors`);
    const sha256 = await run.learner.saveCheckpoint(path, { runId: run.runId, step: String(step) });
    return { path, step, weightsVersion: run.driver.weightsVersion, sha256 };
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

  /** Cancel the latest run if it is still going, wait for it to end, and free its model. */
  async dispose(): Promise<void> {
    const run = this.latest;
    if (!run) return;
    run.driver.cancel();
    await run.done;
    run.learner.dispose();
  }

  /** Last metrics of a run, as a fresh message (or undefined before the first step). */
  lastMetrics(run: RunRecord): StepMetrics | undefined {
    const m = run.driver.history.at(-1);
    return m ? create(StepMetricsSchema, m) : undefined;
  }
}
