/**
 * Fakes for the run loop's tests: a Learner that records what it was given, and a rollout loop
 * that answers prompt jobs with made-up trajectories on a MemoryBus.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterEach } from "vitest";
import {
  type PromptJob,
  PromptJobSchema,
  type Trajectory,
  TrajectorySchema,
} from "../../services/core/gen/rlaif/common/v1/types_pb.js";
import { MemoryBus } from "../../services/core/src/bus/memory-bus.js";
import { ROLLOUT_CONSUMER } from "../../services/core/src/bus/subjects.js";
import { defaultConfig, type RunSettings } from "../../services/core/src/config/settings.js";
import { readLatestWeights } from "../../services/core/src/weights/weights-channel.js";
import type { Learner } from "../../services/optimizer/run-driver.js";
import { trajectoryId } from "../../services/rollout/collect.js";

/** Records the trajectory ids of each step and the latest version visible when it ran. */
export class FakeLearner implements Learner {
  readonly modelKind = "fake";
  readonly contextLength = 64;
  readonly steps: string[][] = [];
  readonly rewards: number[][] = [];
  readonly versionAtStep: number[] = [];
  /** Steps (1-based) whose update reports a non-finite gradient. */
  skipAt = new Set<number>();
  /** Every trajectory applied, with the latest version when its update ran. */
  readonly applied: { t: Trajectory; version: number }[] = [];
  /** Called at the start of each update (1-based step), before it returns. */
  onStep?: (step: number) => Promise<void>;
  blobs = 0;
  disposed = false;
  constructor(private readonly bus: MemoryBus) {}
  async step(trajectories: Trajectory[]) {
    this.steps.push(trajectories.map((t) => t.id));
    this.rewards.push(trajectories.map((t) => t.reward));
    const version = Number((await readLatestWeights(this.bus))?.manifest.version ?? 0);
    this.versionAtStep.push(version);
    for (const t of trajectories) this.applied.push({ t, version });
    await this.onStep?.(this.steps.length);
    return { loss: 0.25, gradNorm: 1.5, entropy: 2, updateSkipped: this.skipAt.has(this.steps.length) };
  }
  async weightsBlob(): Promise<Uint8Array> {
    this.blobs++;
    return Uint8Array.of(1, 2, 3, this.blobs);
  }
  async saveCheckpoint(): Promise<string> {
    return "0".repeat(64);
  }
  dispose(): void {
    this.disposed = true;
  }
}

export function settings(overrides: Partial<RunSettings> = {}): RunSettings {
  return {
    ...defaultConfig().run,
    steps: 2,
    promptsPerStep: 2,
    samplesPerPrompt: 2,
    publishEvery: 1,
    // The synchronous loop unless a test asks for overlap (run-driver-overlap.test.ts).
    maxStaleness: 0,
    maxNewTokens: 5,
    seed: 3,
    prompts: ["p0", "p1", "p2"],
    ...overrides,
  };
}

export function trajectory(
  runId: string,
  step: number,
  index: number,
  sample: number,
  reward = index + sample / 10,
): Trajectory {
  return create(TrajectorySchema, {
    id: trajectoryId(runId, step, index, sample),
    runId,
    step,
    promptIndex: index,
    sampleIndex: sample,
    prompt: `p${index}`,
    completion: "abc",
    completionTokens: [97, 98, 99],
    behaviourLogprobs: [-1, -1, -1],
    referenceLogprobs: [-1.5, -1, -1],
    reward,
  });
}

export interface RolloutHooks {
  /** Called for each job after its trajectories went out, before the ack; may publish more. */
  afterJob?: (job: PromptJob, publish: (t: Trajectory, msgId: string) => Promise<void>) => Promise<void>;
  /** Leave out this sample. */
  skip?: (job: PromptJob, sample: number) => boolean;
  /** The weights version a job's samples carry (as a Policy would stamp them); unset by default. */
  sampledBy?: (job: PromptJob) => Promise<number>;
}

/** A fake rollout worker: pulls jobs, publishes their trajectories (msgId = id), acks the job. */
export function startRollout(bus: MemoryBus, hooks: RolloutHooks = {}) {
  const jobs: { job: PromptJob; msgId: string }[] = [];
  let running = true;
  const loop = (async () => {
    const queue = await bus.queue("jobs");
    const out = await bus.queue("trajectories");
    const publish = async (t: Trajectory, msgId: string) => {
      await out.publish(toBinary(TrajectorySchema, t), { msgId });
    };
    while (running) {
      for (const msg of await queue.pull(ROLLOUT_CONSUMER, { max: 10, expiresMs: 50 })) {
        const job = fromBinary(PromptJobSchema, msg.data);
        jobs.push({ job, msgId: msg.msgId });
        const version = await hooks.sampledBy?.(job);
        for (let s = 0; s < job.samples; s++) {
          if (hooks.skip?.(job, s)) continue;
          const t = trajectory(job.runId, Number(job.step), job.index, s);
          if (version !== undefined) t.weightsVersion = BigInt(version);
          await publish(t, t.id);
        }
        await hooks.afterJob?.(job, publish);
        await msg.ack();
      }
    }
  })();
  return {
    jobs,
    async stop() {
      running = false;
      await loop;
    },
  };
}

/**
 * Per-test fixtures: a fresh MemoryBus with a FakeLearner, and fake rollout loops, all closed
 * after each test of the calling file (registers its afterEach).
 */
export function useFakeRun() {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return {
    cleanups,
    setup(busOpts: ConstructorParameters<typeof MemoryBus>[0] = {}) {
      const bus = new MemoryBus(busOpts);
      cleanups.push(() => bus.close());
      return { bus, learner: new FakeLearner(bus) };
    },
    rollout(bus: MemoryBus, hooks?: RolloutHooks) {
      const r = startRollout(bus, hooks);
      cleanups.push(() => r.stop());
      return r;
    },
  };
}

export const ids = (runId: string, step: number, prompts = 2, samples = 2) =>
  Array.from({ length: prompts * samples }, (_, k) =>
    trajectoryId(runId, step, Math.floor(k / samples), k % samples),
  );
