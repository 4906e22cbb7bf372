/**
 * The bus side of one step: queue its prompt jobs, gather exactly its trajectories. Apart from
 * run-driver.ts so the loop reads as the algorithm; the exactly-once rules live here.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { PromptJobSchema, type Trajectory, TrajectorySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus, QueueMessage } from "../core/src/bus/bus.js";
import { OPTIMIZER_CONSUMER } from "../core/src/bus/subjects.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { RunFailedError } from "../core/src/errors.js";
import { jobSeed } from "./run-helpers.js";

/** Re-exported because run-driver.ts imports it from here; the class lives in errors.ts. */

/** What both halves need to know about the run. */
export interface StepIo {
  bus: Bus;
  /** The id jobs and trajectories carry on the bus (the run id, or a resumed attempt's). */
  busRunId: string;
  settings: RunSettings;
  log?: ((line: string) => void) | undefined;
}

/**
 * Publish the step's prompt jobs, `Nats-Msg-Id` = busRunId.step.index (a re-publish is dropped);
 * prompts are taken cyclically and every job's sampler seed is jobSeed(seed, step, index).
 */
export async function queueJobs(
  io: StepIo,
  prompts: readonly string[],
  step: number,
  minWeightsVersion: number,
): Promise<void> {
  const { settings, busRunId: runId } = io;
  const jobs = await io.bus.queue("jobs");
  for (let i = 0; i < settings.promptsPerStep; i++) {
    const prompt = prompts[((step - 1) * settings.promptsPerStep + i) % prompts.length] as string;
    const job = create(PromptJobSchema, {
      runId,
      step,
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
      minWeightsVersion: BigInt(minWeightsVersion),
    });
    await jobs.publish(toBinary(PromptJobSchema, job), { msgId: `${runId}.${step}.${i}` });
  }
}

/**
 * Pull until this step's P×G distinct trajectories are in hand; other runs' (and earlier
 * attempts') and other steps' are acked and dropped. `checkCancelled` throws to stop waiting.
 */
export async function gatherTrajectories(
  io: StepIo,
  step: number,
  stepTimeoutMs: number,
  checkCancelled: () => void,
): Promise<{ trajs: Trajectory[]; msgs: QueueMessage[] }> {
  const { settings, busRunId: runId } = io;
  const need = settings.promptsPerStep * settings.samplesPerPrompt;
  const queue = await io.bus.queue("trajectories");
  const byId = new Map<string, Trajectory>();
  // Every delivery handed to us is acked once the step is applied, duplicates included.
  const msgs: QueueMessage[] = [];
  const deadline = performance.now() + stepTimeoutMs;
  while (byId.size < need) {
    checkCancelled();
    if (performance.now() > deadline) {
      throw new RunFailedError(
        `step ${step}: only ${byId.size} of ${need} trajectories arrived within ${stepTimeoutMs} ms — are the Rollout, Policy and Feedback services running?`,
      );
    }
    for (const msg of await queue.pull(OPTIMIZER_CONSUMER, { max: need - byId.size, expiresMs: 1000 })) {
      let t: Trajectory;
      try {
        t = fromBinary(TrajectorySchema, msg.data);
      } catch {
        io.log?.(`optimizer: dropping undecodable trajectory ${msg.msgId}`);
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
