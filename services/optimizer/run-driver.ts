/**
 * The run loop of the Optimizer (docs/architecture.md#data-flow): for each step, queue the prompt jobs, gather exactly
 * that step's trajectories, take one REINFORCE step, publish new weights, report metrics.
 *
 * Exactly-once: jobs are published with `Nats-Msg-Id` = run.step.index, trajectories are keyed by
 * id and a step keeps only one trajectory per id, and trajectory messages are acked only after
 * the update that used them has been applied — a crash before that leaves them queued.
 *
 * Resume (run-checkpoint.ts): a run continued from a checkpoint of step k republishes the saved
 * reference and served weights and goes on at step k + 1 under a fresh bus id (`<runId>-resume<k>-
 * <hex>`), so its jobs and trajectories never collide with the crashed attempt's in the
 * de-duplication window, and that attempt's leftovers are dropped as another run's. Updates the
 * crashed process applied after step k died with it; their samples are drawn again with the same
 * seeds from the same weights, so the resumed run applies each step's data exactly once.
 *
 * Overlap (`maxStaleness` n > 0): once step k is gathered, the jobs of steps up to k + n go out
 * and step k's update starts without being awaited (the learner computes in a thread of its own,
 * learner-thread.ts), so the Policy samples step k + 1 while the learner updates on step k. Step
 * k's weights are published only when step k + 1's samples are all in: with n = 1 every sample of
 * a step was drawn by the same version, exactly one behind the weights it is applied to, so such
 * a run is as reproducible and as resumable as a synchronous one (its checkpoints carry the
 * served weights beside the learner's). Each job asks for the version in force when it was
 * queued, and at most one version is published per step, so no sample is applied more than n
 * versions old; the learner's off-policy correction (ppo-clip, truncated) reweights them by the
 * behaviour log-probs they carry. n = 0 is the synchronous loop, unchanged. Either way a crash
 * only loses unacked work: jobs and trajectories of later steps die with the attempt's bus id.
 */

import { create, toBinary } from "@bufbuild/protobuf";
import {
  type RunSummary,
  RunSummarySchema,
  type StepMetrics,
  StepMetricsSchema,
  type Trajectory,
  type WeightsManifest,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import { runStateKey } from "../core/src/bus/subjects.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { RunCancelledError, RunFailedError } from "../core/src/errors.js";
import { isAdapterBlob } from "../core/src/model/lora-files.js";
import { recordStep, recordWeightsPublish } from "../core/src/ops/metrics.js";
import { ATTR, endSpan, inSpan, SpanKind, startSpan, traceparentOf } from "../core/src/telemetry/spans.js";
import { type StagedWeights, WeightsPublisher } from "../core/src/weights/weights-publisher.js";
import { exclusionFailure } from "./exclusion-limit.js";
import { jobSeed, meanStaleness, StepLock, sampleKl, usableTrajectories } from "./run-helpers.js";
import type { Learner, LearnerStepResult, ResumePoint } from "./run-types.js";
import { queueJobs, type StepIo, TrajectoryInbox } from "./step-io.js";
import { completionTokens, type PipelineStats, queueDepths, stepMetrics } from "./step-metrics.js";
import { BusyClock, type ExclusionCause, excludedByCause, stalenessHistogram } from "./step-stats.js";
import { TrajectoryLedger } from "./trajectory-ledger.js";

/** The loop's contracts (run-types.ts), re-exported for the modules that import them from here. */
export type { Learner, LearnerStepResult, ResumePoint };
export { jobSeed, sampleKl };

/** Options of one run. */
export interface RunOptions {
  runId: string;
  settings: RunSettings;
  /** Prompts to cycle through (already resolved: config or built-in). */
  prompts: string[];
  /** Max wait for one step's trajectories. */
  stepTimeoutMs: number;
  /** "embedded" or "distributed", for the summary. */
  mode: string;
  onMetrics?: (m: StepMetrics) => void;
  /** The trajectories a step applied, just before its onMetrics (the sample table, step-samples.ts). */
  onSamples?: (step: number, trajs: Trajectory[]) => void;
  /** Awaited after each step's metrics, still inside the step lock (periodic checkpoints). */
  onStepEnd?: (step: number) => Promise<void>;
  /** Continue from a checkpoint instead of starting at step 1. */
  resume?: ResumePoint;
  /**
   * A run started over from step 0 after its Optimizer died before its first checkpoint: it
   * takes a fresh bus run id, as a resumed run does, so the dead attempt's trajectories still
   * queued are dropped (and counted) by its ledger, never applied.
   */
  restarted?: boolean;
  /** Publishes the weights (signed, old versions collected); absent: an unsigned one of its own. */
  weights?: WeightsPublisher;
  log?: (line: string) => void;
}

/** Drives one run; `paused` is polled between steps. */
export class RunDriver {
  paused = false;
  /** Set by `cancel()`; the loop stops at its next check with RunCancelledError. */
  private cancelled = false;
  step = 0;
  weightsVersion = 0;
  readonly history: StepMetrics[] = [];
  /** The run id its jobs and trajectories carry on the bus (differs from runId once resumed). */
  readonly busRunId: string;
  /** Reference weights blob (version 1 of the run), and the last published blob and its step. */
  referenceBlob: Uint8Array | null = null;
  servedBlob: Uint8Array | null = null;
  servedStep = 0;
  /** Trajectories and completion tokens applied so far (resumed runs include earlier attempts). */
  trajectories = 0;
  tokens = 0;
  /** Trajectory ids applied since the last checkpoint, steps in flight, a crashed attempt's drops. */
  readonly ledger: TrajectoryLedger;
  private readonly lock = new StepLock();
  private readonly weights: WeightsPublisher;
  /** With overlap: the last update's weights, uploaded but not yet pointed to (see run()). */
  private staged: StagedWeights | null = null;
  private wallBefore = 0;
  private started = performance.now();
  /** Times every learner call, for StepMetrics.optimizer_busy_fraction. */
  private readonly busy = new BusyClock();
  /** The run's trajectory inbox once the loop runs (queue depths read how much it holds). */
  private inbox: TrajectoryInbox | null = null;
  /** `traceparent` of the last step's span: the parent of its weights' publish span. */
  private stepTraceparent = "";
  /** Bytes published since the last step's metrics, and whether the last version was a delta. */
  private published = { bytes: 0, delta: false };

  constructor(
    private readonly bus: Bus,
    private readonly learner: Learner,
    private readonly opts: RunOptions,
  ) {
    this.weights = opts.weights ?? new WeightsPublisher();
    const r = opts.resume;
    this.busRunId =
      r || opts.restarted
        ? `${opts.runId}-resume${r?.step ?? 0}-${Math.floor(Math.random() * 0x10000)
            .toString(16)
            .padStart(4, "0")}`
        : opts.runId;
    this.ledger = new TrajectoryLedger(opts.runId, this.busRunId, r?.ledger ?? null, r?.step ?? 0, opts.log);
    if (r) {
      this.history.push(...r.history);
      Object.assign(this, { trajectories: r.trajectories, tokens: r.tokens, wallBefore: r.wallSeconds });
    }
  }

  /** Seconds the run has trained, earlier attempts included. */
  get wallSeconds(): number {
    return this.wallBefore + (performance.now() - this.started) / 1000;
  }

  /**
   * Run `task` between steps: never while an update, its publish or its bookkeeping is under way,
   * so step, weights, optimiser state and counters it reads all belong to the same step.
   */
  atStepBoundary<T>(task: () => Promise<T>): Promise<T> {
    return this.lock.run(task);
  }

  /** Stop the run at the next step boundary or pull (the current update is not interrupted). */
  cancel(): void {
    this.cancelled = true;
  }

  private checkCancelled(): void {
    if (this.cancelled)
      throw new RunCancelledError(`run ${this.opts.runId} was cancelled after step ${this.step}`);
  }

  /** Run every step; resolves with the summary (checkpointing is the caller's choice). */
  async run(): Promise<RunSummary> {
    const { settings, runId, resume } = this.opts;
    this.started = performance.now();
    // Version 1 of the run: its starting weights, which are also the frozen reference (a resumed
    // run republishes its saved reference, then the weights the replicas served at its step).
    this.referenceBlob = resume?.referenceBlob ?? (await this.learner.weightsBlob());
    const first = await this.weights.publish(this.bus, {
      blob: this.referenceBlob,
      runId,
      step: 0,
      modelKind: this.learner.modelKind,
    });
    this.logPublished(first, this.referenceBlob);
    const reference = { objectName: first.objectName, sha256: first.sha256, version: Number(first.version) };
    this.weightsVersion = Number(first.version);
    this.servedBlob = this.referenceBlob;
    if (resume) {
      this.step = resume.step;
      await this.publish(resume.servedBlob, resume.servedStep, reference);
    }
    const io: StepIo = {
      bus: this.bus,
      busRunId: this.busRunId,
      settings,
      log: this.opts.log,
      onDropped: (t) => this.ledger.dropped(t),
    };
    const inbox = new TrajectoryInbox(io);
    this.inbox = inbox;
    const lag = settings.maxStaleness;
    // Jobs of steps up to `queued` are out; each is sampled by the weights in force when it was
    // queued, or newer ones.
    let queued = this.step;
    const queueThrough = async (last: number) => {
      for (; queued < Math.min(last, settings.steps); ) {
        await queueJobs(io, this.opts.prompts, ++queued, this.weightsVersion);
        this.ledger.queued(queued);
      }
    };
    const due = (step: number) => step % settings.publishEvery === 0 || step === settings.steps;
    // With overlap, the previous step's update (learner, ack, metrics, onStepEnd) while this
    // step's samples are drawn; null in a synchronous run, or before the first update.
    let pending: Promise<void> | null = null;
    let ended = false;
    this.busy.reset();
    try {
      for (let step = this.step + 1; step <= settings.steps; step++) {
        while (this.paused && !this.cancelled) await new Promise((r) => setTimeout(r, 100));
        // A cancel lets the update under way finish (and be recorded) first.
        if (this.cancelled) await pending;
        this.checkCancelled();
        const stepStart = performance.now();
        await queueThrough(step);
        const gathering = inbox.gather(step, queued, this.opts.stepTimeoutMs, () => {
          if (ended) throw new RunFailedError(`run ${runId} ended`);
          this.checkCancelled();
        });
        gathering.catch(() => undefined); // awaited below, unless the pending update failed first
        await pending;
        // A step boundary: a cancel during the previous update stops the run here.
        this.checkCancelled();
        const { trajs: arrived, msgs, contexts, dropped } = await gathering;
        if (lag > 0 && step - 1 > this.servedStep && due(step - 1)) {
          // The previous update's weights go out only now that this step's samples are all in,
          // so every one of them was drawn by the same version: a run with overlap is exactly
          // as reproducible (and resumable) as a synchronous one, each sample one version old.
          await this.lock.run(async () => {
            const staged = this.staged?.input.step === step - 1 ? this.staged : null;
            this.staged = null;
            const blob = staged?.input.blob ?? (await this.weightsBlob());
            await this.publish(blob, step - 1, reference, staged, this.stepTraceparent);
          });
        }
        // With staleness allowed, a sample older than the bound is refused too (defence in depth
        // behind the jobs' min_weights_version); at 0 every error-free sample is used, as always.
        const floor = lag > 0 ? this.weightsVersion - lag : 0;
        const trajs = usableTrajectories(arrived, floor, this.opts.log);
        const failure = exclusionFailure(step, arrived, trajs.length, floor, settings.maxExcludedShare);
        if (failure || trajs.length === 0)
          throw new RunFailedError(failure ?? `step ${step}: no sample arrived`);
        // Overlap: the next steps' jobs go out before this update, so the Policy samples them
        // while the learner (in its own thread) updates on this step.
        if (lag > 0) await queueThrough(step + lag);
        const pipeline: PipelineStats = {
          staleness: meanStaleness(trajs, this.weightsVersion),
          stalenessHistogram: stalenessHistogram(trajs, this.weightsVersion, lag),
          excludedByCause: excludedByCause(arrived, floor),
          droppedByCause: dropped,
        };
        const update = this.lock.run(async () => {
          // One step consumes many samples' traces: its span starts a trace of its own and
          // links to each trajectory's consume span; its weight publish is its child.
          const span = startSpan("optimizer.step", undefined, {
            // The version in force while its samples were drawn; the publish span names the new one.
            attributes: {
              [ATTR.runId]: runId,
              [ATTR.step]: step,
              [ATTR.weightsVersion]: this.weightsVersion,
            },
            links: contexts,
          });
          this.stepTraceparent = traceparentOf(span);
          let result: LearnerStepResult;
          try {
            // In the step's span: its log lines carry the step's trace id (telemetry/log-format.ts).
            result = await inSpan(span, async () => {
              const stepped = await this.busy.time(() => this.learner.step(trajs));
              this.ledger.stepApplied(step, trajs);
              for (const m of msgs) await m.ack();
              if ((lag === 0 || step === settings.steps) && due(step)) {
                await this.publish(await this.weightsBlob(), step, reference, null, this.stepTraceparent);
              }
              return stepped;
            });
          } catch (err) {
            endSpan(span, err);
            throw err;
          }
          endSpan(span);
          await this.record(step, stepStart, arrived.length, trajs, result, pipeline);
          await this.opts.onStepEnd?.(step);
          if (lag > 0 && step < settings.steps && due(step)) {
            // Upload this step's weights now, while the replicas still sample the next step with
            // the old ones; the pointer moves (fast) once that step's samples are all in.
            const input = {
              blob: await this.weightsBlob(),
              runId,
              step,
              modelKind: this.learner.modelKind,
              reference,
            };
            this.staged = await this.weights.stage(this.bus, input);
          }
        });
        if (lag === 0) await update;
        else pending = update;
      }
      await pending;
    } finally {
      ended = true;
      // An update still under way when the loop failed ends before the run does (its learner
      // may be disposed next); its own error, if any, is the lesser one.
      await pending?.catch(() => undefined);
    }
    return create(RunSummarySchema, {
      runId,
      steps: this.step,
      trajectories: this.trajectories,
      firstMeanReward: this.history[0]?.meanReward ?? 0,
      lastMeanReward: this.history.at(-1)?.meanReward ?? 0,
      finalKl: this.history.at(-1)?.kl ?? 0,
      finalWeightsVersion: BigInt(this.weightsVersion),
      wallSeconds: this.wallSeconds,
      tokensPerSecond: this.tokens / this.wallSeconds,
      mode: this.opts.mode,
      skippedUpdates: this.history.filter((m) => m.updateSkipped).length,
      droppedInFlight: this.ledger.drops.inFlight,
      abstained: this.excludedOverRun("abstained"),
      scorerErrors: this.excludedOverRun("scorer_error"),
    });
  }

  /** Samples of the run's recorded steps excluded for `cause` (RunSummary.abstained, scorer_errors). */
  private excludedOverRun(cause: ExclusionCause): number {
    return this.history.reduce((n, m) => n + (m.excludedByCause[cause] ?? 0), 0);
  }

  /** The learner's weights for a publish, the export counted as learner time. */
  private weightsBlob(): Promise<Uint8Array> {
    return this.busy.time(() => this.learner.weightsBlob());
  }

  private async publish(
    blob: Uint8Array,
    step: number,
    reference: { objectName: string; sha256: string; version: number },
    staged: StagedWeights | null = null,
    stepTraceparent = "",
  ): Promise<void> {
    const { runId } = this.opts;
    const t0 = performance.now();
    // A child of its step's span (none for the reference and resume publishes before step 1).
    const span = stepTraceparent
      ? startSpan("weights publish", stepTraceparent, {
          kind: SpanKind.PRODUCER,
          attributes: { [ATTR.runId]: runId, [ATTR.step]: step },
        })
      : null;
    // The manifest names the publish span, so each replica's swap span is its child.
    const traceparent = span ? traceparentOf(span) : "";
    const commit = async (): Promise<WeightsManifest> => {
      const manifest = staged
        ? await this.weights.commit(this.bus, staged, traceparent)
        : await this.weights.publish(
            this.bus,
            { blob, runId, step, modelKind: this.learner.modelKind, reference },
            traceparent,
          );
      span?.setAttribute(ATTR.weightsVersion, Number(manifest.version));
      this.logPublished(manifest, blob);
      return manifest;
    };
    let manifest: WeightsManifest;
    try {
      manifest = span ? await inSpan(span, commit) : await commit();
    } catch (err) {
      if (span) endSpan(span, err);
      throw err;
    }
    if (span) endSpan(span);
    recordWeightsPublish(runId, (performance.now() - t0) / 1000);
    this.weightsVersion = Number(manifest.version);
    this.servedBlob = blob;
    this.servedStep = step;
  }

  /**
   * Bytes per version (also counted for the next StepMetrics): a LoRA run's adapter-only versions
   * against the full weights of its first, and a delta's changed tensors against the full blob.
   */
  private logPublished(m: WeightsManifest, blob: Uint8Array): void {
    const delta = m.baseVersion > 0n;
    const bytes = Number(m.blobSizeBytes);
    this.published = { bytes: this.published.bytes + bytes, delta };
    const what = isAdapterBlob(blob) ? "adapters" : "full weights";
    const how = delta
      ? `, a delta on v${m.baseVersion}: ${m.tensors.filter((t) => !t.unchanged).length} of ${m.tensors.length} tensors of the ${blob.length}-byte blob`
      : "";
    this.opts.log?.(
      `optimizer: published weights v${m.version} (step ${m.step}, ${what}, ${bytes} bytes${how})`,
    );
  }

  /** Counts the step, builds its metrics and hands them on (history, KV run state, onMetrics). */
  private async record(
    step: number,
    stepStart: number,
    arrived: number,
    trajs: Trajectory[],
    update: LearnerStepResult,
    pipeline: PipelineStats,
  ): Promise<void> {
    const { runId } = this.opts;
    const lap = this.busy.lap();
    this.trajectories += trajs.length;
    this.tokens += completionTokens(trajs);
    const metrics = await stepMetrics({
      runId,
      step,
      stepStart,
      arrived,
      trajs,
      update,
      pipeline,
      lap,
      weightsVersion: this.weightsVersion,
      wallSeconds: () => this.wallSeconds,
      queueDepths: () => queueDepths(this.bus, this.inbox, this.opts.log),
      published: this.published,
    });
    this.published = { bytes: 0, delta: false };
    recordStep(metrics, (performance.now() - stepStart) / 1000);
    if (metrics.updateSkipped) {
      this.opts.log?.(`optimizer: step ${step}: the gradient was not finite, so the update was skipped`);
    }
    // Which samples the update used (prompt.sample), so a run's log shows each applied exactly once.
    const applied = trajs.map((t) => `${t.promptIndex}.${t.sampleIndex}`).join(",");
    this.opts.log?.(`optimizer: step ${step} applied ${trajs.length} of ${arrived}: ${applied}`);
    this.step = step;
    this.history.push(metrics);
    await (await this.bus.kv()).put(runStateKey(runId), toBinary(StepMetricsSchema, metrics));
    this.opts.onSamples?.(step, trajs);
    this.opts.onMetrics?.(metrics);
  }
}
