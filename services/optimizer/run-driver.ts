/**
 * The run loop of the Optimizer (DESIGN §3): for each step, queue the prompt jobs, gather exactly
 * that step's trajectories, take one REINFORCE step, publish new weights, report metrics.
 *
 * Exactly-once: jobs are published with `Nats-Msg-Id` = run.step.index, trajectories are keyed by
 * id and a step keeps only one trajectory per id, and trajectory messages are acked only after
 * the update that used them has been applied — a crash before that leaves them queued.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  PromptJobSchema,
  type RunSummary,
  RunSummarySchema,
  type StepMetrics,
  StepMetricsSchema,
  type Trajectory,
  TrajectorySchema,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus, QueueMessage } from "../core/src/bus/bus.js";
import { runStateKey } from "../core/src/bus/subjects.js";
import type { RunSettings } from "../core/src/config/defaults.js";
import { RlaifError } from "../core/src/errors.js";
import { publishWeights } from "../core/src/weights/weights-channel.js";

/** What one update reports (the optional parts default to 0 in the metrics). */
export interface LearnerStepResult {
  loss: number;
  gradNorm: number;
  entropy: number;
  /** Share of completion tokens whose importance ratio was clipped/truncated. */
  clipFraction?: number;
  /** β of the KL penalty used by the update. */
  klCoef?: number;
  /** Learning rate used by the update. */
  learningRate?: number;
}

/** What the run loop needs from the learning side (model + optimiser). */
export interface Learner {
  readonly modelKind: string;
  /** Tokens the model reads at most (BOS + prompt + completion). */
  readonly contextLength: number;
  /** One policy-gradient update on these trajectories. */
  step(trajectories: Trajectory[]): Promise<LearnerStepResult>;
  /** Current weights in the safetensors layout published to replicas. */
  weightsBlob(): Uint8Array;
  /** Write a checkpoint file (atomically); resolves with its SHA-256. */
  saveCheckpoint(path: string, metadata: Record<string, string>): Promise<string>;
  /** Free the model and optimiser state. */
  dispose(): void;
}

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
  log?: (line: string) => void;
}

/** The run failed (timeout waiting for trajectories, a peer gone); the message says why. */
export class RunFailedError extends RlaifError {}

/** Deterministic 32-bit mix of run seed, step and prompt index, for per-job sampler seeds. */
export function jobSeed(seed: number, step: number, index: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [step, index]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

function meanStd(xs: number[]): [number, number] {
  const mean = xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(xs.length, 1);
  return [mean, Math.sqrt(variance)];
}

/** Mean over samples of Σ_t (log π_behaviour − log π_ref): the k1 KL estimate in nats per sample. */
export function sampleKl(trajs: Trajectory[]): number {
  const per = trajs.map((t) =>
    t.behaviourLogprobs.reduce((s, lp, i) => s + lp - (t.referenceLogprobs[i] ?? lp), 0),
  );
  return meanStd(per)[0];
}

/** Drives one run; `paused` is polled between steps. */
export class RunDriver {
  paused = false;
  /** Set by `cancel()`; the loop stops at its next check with RunFailedError. */
  private cancelled = false;
  step = 0;
  weightsVersion = 0;
  readonly history: StepMetrics[] = [];

  constructor(
    private readonly bus: Bus,
    private readonly learner: Learner,
    private readonly opts: RunOptions,
  ) {}

  /** Stop the run at the next step boundary or pull (the current update is not interrupted). */
  cancel(): void {
    this.cancelled = true;
  }

  private checkCancelled(): void {
    if (this.cancelled) throw new RunFailedError(`run ${this.opts.runId} was cancelled at step ${this.step}`);
  }

  /** Run every step; resolves with the summary (checkpointing is the caller's choice). */
  async run(): Promise<RunSummary> {
    const { settings, runId } = this.opts;
    const started = performance.now();
    // Version 1 of the run: its starting weights, which are also the frozen reference.
    const first = await publishWeights(this.bus, {
      blob: this.learner.weightsBlob(),
      runId,
      step: 0,
      modelKind: this.learner.modelKind,
    });
    const reference = { objectName: first.objectName, sha256: first.sha256, version: Number(first.version) };
    this.weightsVersion = Number(first.version);
    let trajectories = 0;
    let tokens = 0;
    for (let step = 1; step <= settings.steps; step++) {
      while (this.paused && !this.cancelled) await new Promise((r) => setTimeout(r, 100));
      this.checkCancelled();
      const stepStart = performance.now();
      await this.queueJobs(step);
      const { trajs: arrived, msgs } = await this.gather(step);
      // Samples the Rollout could not produce or score carry an error: they are excluded.
      const trajs = arrived.filter((t) => !t.error);
      if (trajs.length === 0) {
        throw new RunFailedError(`step ${step}: every sample failed; the first error: ${arrived[0]?.error}`);
      }
      for (const t of arrived) if (t.error) this.opts.log?.(`optimizer: excluding ${t.id}: ${t.error}`);
      const update = await this.learner.step(trajs);
      for (const m of msgs) await m.ack();
      if (step % settings.publishEvery === 0 || step === settings.steps) {
        const manifest = await publishWeights(this.bus, {
          blob: this.learner.weightsBlob(),
          runId,
          step,
          modelKind: this.learner.modelKind,
          reference,
        });
        this.weightsVersion = Number(manifest.version);
      }
      const stepTokens = trajs.reduce((s, t) => s + t.completionTokens.length, 0);
      trajectories += trajs.length;
      tokens += stepTokens;
      const [meanReward, stdReward] = meanStd(trajs.map((t) => t.reward));
      const metrics = create(StepMetricsSchema, {
        runId,
        step: BigInt(step),
        meanReward,
        stdReward,
        kl: sampleKl(trajs),
        entropy: update.entropy,
        gradNorm: update.gradNorm,
        loss: update.loss,
        trajectories: trajs.length,
        excluded: arrived.length - trajs.length,
        tokensPerSecond: stepTokens / ((performance.now() - stepStart) / 1000),
        clipFraction: update.clipFraction ?? 0,
        klCoef: update.klCoef ?? 0,
        learningRate: update.learningRate ?? 0,
        weightsVersion: BigInt(this.weightsVersion),
        wallSeconds: (performance.now() - started) / 1000,
      });
      this.step = step;
      this.history.push(metrics);
      await (await this.bus.kv()).put(runStateKey(runId), toBinary(StepMetricsSchema, metrics));
      this.opts.onMetrics?.(metrics);
    }
    const wall = (performance.now() - started) / 1000;
    return create(RunSummarySchema, {
      runId,
      steps: this.step,
      trajectories,
      firstMeanReward: this.history[0]?.meanReward ?? 0,
      lastMeanReward: this.history.at(-1)?.meanReward ?? 0,
      finalKl: this.history.at(-1)?.kl ?? 0,
      finalWeightsVersion: BigInt(this.weightsVersion),
      wallSeconds: wall,
      tokensPerSecond: tokens / wall,
      mode: this.opts.mode,
    });
  }

  private async queueJobs(step: number): Promise<void> {
    const { settings, runId, prompts } = this.opts;
    const jobs = await this.bus.queue("jobs");
    for (let i = 0; i < settings.promptsPerStep; i++) {
      const prompt = prompts[((step - 1) * settings.promptsPerStep + i) % prompts.length] as string;
      const job = create(PromptJobSchema, {
        runId,
        step: BigInt(step),
        index: i,
        prompt,
        samples: settings.samplesPerPrompt,
        sampling: {
          maxNewTokens: settings.maxNewTokens,
          temperature: settings.temperature,
          topK: settings.topK,
          topP: settings.topP,
          seed: BigInt(jobSeed(settings.seed, step, i)),
        },
        minWeightsVersion: BigInt(this.weightsVersion),
      });
      await jobs.publish(toBinary(PromptJobSchema, job), { msgId: `${runId}.${step}.${i}` });
    }
  }

  /** Pull until this step's P×G distinct trajectories are in hand; other runs' and steps' are dropped. */
  private async gather(step: number): Promise<{ trajs: Trajectory[]; msgs: QueueMessage[] }> {
    const { settings, runId, stepTimeoutMs } = this.opts;
    const need = settings.promptsPerStep * settings.samplesPerPrompt;
    const queue = await this.bus.queue("trajectories");
    const byId = new Map<string, Trajectory>();
    // Every delivery handed to us is acked once the step is applied, duplicates included.
    const msgs: QueueMessage[] = [];
    const deadline = performance.now() + stepTimeoutMs;
    while (byId.size < need) {
      this.checkCancelled();
      if (performance.now() > deadline) {
        throw new RunFailedError(
          `step ${step}: only ${byId.size} of ${need} trajectories arrived within ${stepTimeoutMs} ms — are the Rollout, Policy and Feedback services running?`,
        );
      }
      for (const msg of await queue.pull("optimizer", { max: need - byId.size, expiresMs: 1000 })) {
        let t: Trajectory;
        try {
          t = fromBinary(TrajectorySchema, msg.data);
        } catch {
          this.opts.log?.(`optimizer: dropping undecodable trajectory ${msg.msgId}`);
          await msg.ack();
          continue;
        }
        if (t.runId !== runId || Number(t.step) !== step) {
          // Another run's, or an earlier step's (already applied): never applied twice.
          await msg.ack();
          continue;
        }
        // The first copy of an id is the one applied; a duplicate is only acked with the step.
        if (!byId.has(t.id)) byId.set(t.id, t);
        msgs.push(msg);
      }
    }
    const trajs = [...byId.values()].sort(
      (a, b) => a.promptIndex - b.promptIndex || a.sampleIndex - b.sampleIndex,
    );
    return { trajs, msgs };
  }
}
