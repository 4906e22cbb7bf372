/**
 * The bus side of a run: queue a step's prompt jobs, gather exactly its trajectories. Apart from
 * run-driver.ts so the loop reads as the algorithm; the exactly-once rules live here.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { PromptJobSchema, type Trajectory, TrajectorySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus, QueueMessage } from "../core/src/bus/bus.js";
import { OPTIMIZER_CONSUMER } from "../core/src/bus/subjects.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { RunFailedError } from "../core/src/errors.js";
import { ATTR, endSpan, SpanKind, startSpan, traceparentOf } from "../core/src/telemetry/spans.js";
import { jobSeed } from "./run-helpers.js";

/** What both halves need to know about the run. */
export interface StepIo {
  bus: Bus;
  /** The id jobs and trajectories carry on the bus (the run id, or a resumed attempt's). */
  busRunId: string;
  settings: RunSettings;
  log?: ((line: string) => void) | undefined;
  /** Told of every decodable trajectory dropped unapplied (the ledger counts a crashed attempt's). */
  onDropped?: ((t: Trajectory) => void) | undefined;
}

/**
 * Publish the step's prompt jobs, `Nats-Msg-Id` = busRunId.step.index (a re-publish is dropped);
 * prompts are taken cyclically and every job's sampler seed is jobSeed(seed, step, index). Each
 * job's `prompt job publish` span starts its samples' trace; its `traceparent` goes in the
 * job's headers (none while tracing is off: the Rollout then makes one per job).
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
    // The root of the sample's trace: the Rollout's job span is its child (via the header).
    const span = startSpan("prompt job publish", undefined, {
      kind: SpanKind.PRODUCER,
      attributes: { [ATTR.runId]: runId, [ATTR.step]: step, [ATTR.promptIndex]: i },
    });
    const traceparent = traceparentOf(span);
    try {
      await jobs.publish(toBinary(PromptJobSchema, job), {
        msgId: `${runId}.${step}.${i}`,
        ...(traceparent ? { headers: { traceparent } } : {}),
      });
      endSpan(span);
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
  }
}

/**
 * Why the inbox dropped a trajectory message without counting it as a sample of any step
 * (StepMetrics.dropped_by_cause keys): another run's, an earlier (applied) step's, a step whose
 * jobs were not queued, a second copy of an id, or bytes that do not decode.
 */
export type DropCause = "other_run" | "applied_before" | "not_queued" | "duplicate" | "undecodable";

/**
 * One step's trajectories as they arrive: the first copy of each id, every delivery to ack, and
 * the `traceparent` of each applied copy's consume span (the step span links to them).
 */
interface StepArrivals {
  byId: Map<string, Trajectory>;
  msgs: QueueMessage[];
  contexts: string[];
}

/**
 * The "trajectory consume" span of an applied trajectory, a child of the trajectory message's
 * `traceparent` (the Rollout's publish span), so the sample's trace ends in the Optimizer. Its
 * `traceparent`, or "" when the message carried none or tracing is off.
 */
function consumeSpan(msg: QueueMessage, t: Trajectory): string {
  const parent = msg.headers.traceparent;
  if (!parent) return "";
  const span = startSpan("trajectory consume", parent, {
    kind: SpanKind.CONSUMER,
    attributes: { [ATTR.runId]: t.runId, [ATTR.step]: Number(t.step), [ATTR.trajectoryId]: t.id },
  });
  const tp = traceparentOf(span);
  endSpan(span);
  return tp === parent ? "" : tp;
}

/**
 * The Optimizer's side of the trajectories queue. Why a class: with `max_staleness` > 0 the jobs
 * of later steps are already out while a step is gathered, so their trajectories can arrive
 * early; the inbox holds them (unacked, so a crash still leaves them queued) until their step is
 * gathered. Anything of a step whose jobs were not queued, an earlier step's (already applied)
 * and another run's is acked and dropped, so nothing is applied twice. With `max_staleness` 0 no
 * later step is ever queued, and it gathers exactly as the synchronous loop always did.
 */
export class TrajectoryInbox {
  private readonly early = new Map<number, StepArrivals>();

  constructor(private readonly io: StepIo) {}

  /**
   * Pull until `step`'s P×G distinct trajectories are in hand, holding those of steps up to
   * `queuedThrough` for later. `checkCancelled` throws to stop waiting. `dropped` counts the
   * messages dropped meanwhile, by {@link DropCause}.
   */
  async gather(
    step: number,
    queuedThrough: number,
    stepTimeoutMs: number,
    checkCancelled: () => void,
  ): Promise<{
    trajs: Trajectory[];
    msgs: QueueMessage[];
    contexts: string[];
    dropped: Record<string, number>;
  }> {
    const { settings, busRunId: runId } = this.io;
    const need = settings.promptsPerStep * settings.samplesPerPrompt;
    const queue = await this.io.bus.queue("trajectories");
    const current = this.arrivals(step);
    this.early.delete(step);
    const deadline = performance.now() + stepTimeoutMs;
    const dropped: Record<string, number> = {};
    const drop = async (msg: QueueMessage, cause: DropCause) => {
      dropped[cause] = (dropped[cause] ?? 0) + 1;
      await msg.ack();
    };
    while (current.byId.size < need) {
      checkCancelled();
      if (performance.now() > deadline) {
        throw new RunFailedError(
          `step ${step}: only ${current.byId.size} of ${need} trajectories arrived within ${stepTimeoutMs} ms — are the Rollout, Policy and Feedback services running?`,
        );
      }
      const max = need - current.byId.size;
      for (const msg of await queue.pull(OPTIMIZER_CONSUMER, { max, expiresMs: 1000 })) {
        let t: Trajectory;
        try {
          t = fromBinary(TrajectorySchema, msg.data);
        } catch {
          this.io.log?.(`optimizer: dropping undecodable trajectory ${msg.msgId}`);
          await drop(msg, "undecodable");
          continue;
        }
        const tStep = Number(t.step);
        if (t.runId !== runId || tStep < step || tStep > queuedThrough) {
          // Another run's, an earlier step's (already applied) or one nobody asked for yet.
          this.io.onDropped?.(t);
          await drop(msg, t.runId !== runId ? "other_run" : tStep < step ? "applied_before" : "not_queued");
        } else {
          const into = tStep === step ? current : this.arrivals(tStep);
          // The first copy of an id is the one applied; a duplicate is only acked with the step.
          if (into.byId.has(t.id)) dropped.duplicate = (dropped.duplicate ?? 0) + 1;
          else {
            into.byId.set(t.id, t);
            const tp = consumeSpan(msg, t);
            if (tp) into.contexts.push(tp);
          }
          into.msgs.push(msg);
        }
      }
    }
    const trajs = [...current.byId.values()].sort(
      (a, b) => a.promptIndex - b.promptIndex || a.sampleIndex - b.sampleIndex,
    );
    return { trajs, msgs: current.msgs, contexts: current.contexts, dropped };
  }

  /** Trajectory messages held (unacked) for steps after the one last gathered. */
  held(): number {
    let n = 0;
    for (const a of this.early.values()) n += a.msgs.length;
    return n;
  }

  private arrivals(step: number): StepArrivals {
    let a = this.early.get(step);
    if (!a) {
      a = { byId: new Map(), msgs: [], contexts: [] };
      this.early.set(step, a);
    }
    return a;
  }
}
