/**
 * The Rollout worker loop: pull a prompt job from the work queue, collect its trajectories,
 * publish them, and only then ack the job. A crash at any point leaves the job unacked, so it is
 * redelivered; trajectories are published with their id as `Nats-Msg-Id`, so a redelivered job
 * that had already published them produces duplicates the bus drops. Nothing is lost or doubled.
 */
import { randomBytes } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { PromptJobSchema, type Trajectory, TrajectorySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus, Queue, QueueMessage } from "../core/src/bus/bus.js";
import { PeerError, StaleWeightsError, ValidationError } from "../core/src/errors.js";
import {
  type CollectJob,
  collectPrompt,
  type FeedbackCaller,
  failedTrajectories,
  type PolicyCaller,
} from "./collect.js";

/** Counters reported by RolloutService.GetStatus. */
export interface RolloutCounters {
  jobsCompleted: number;
  trajectoriesPublished: number;
  jobsFailed: number;
  lastWeightsVersion: number;
}

/** Worker tuning. */
export interface RolloutWorkerOptions {
  /** Durable consumer group of the jobs queue; workers of one group share the jobs. */
  group: string;
  /** Deadline of each Policy/Feedback call. */
  rpcTimeoutMs: number;
  /** Called with a line to log (failures, malformed jobs). */
  log?: (line: string) => void;
  /** Deliveries of a job before its samples are reported as failed (default 5). */
  maxAttempts?: number;
  /**
   * Jobs in flight at once (default 1). Several let the Policy batch their samples together: a
   * step's jobs are decoded in one batch instead of one after another.
   */
  concurrency?: number;
}

/** A fresh W3C traceparent (version 00, sampled), so one sample can be followed across services. */
export function newTraceparent(): string {
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
}

/** Pulls prompt jobs and publishes scored trajectories until stopped, `concurrency` at a time. */
export class RolloutWorker {
  readonly counters: RolloutCounters = {
    jobsCompleted: 0,
    trajectoriesPublished: 0,
    jobsFailed: 0,
    lastWeightsVersion: 0,
  };
  private running = false;
  private readonly maxAttempts: number;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly bus: Bus,
    private readonly policy: PolicyCaller,
    private readonly feedback: FeedbackCaller,
    private readonly opts: RolloutWorkerOptions,
  ) {
    this.maxAttempts = opts.maxAttempts ?? 5;
  }

  /** Start the pull loop (idempotent). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stop after the jobs in hand; resolves when every lane has exited. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    const jobs = await this.bus.queue("jobs");
    const trajectories = await this.bus.queue("trajectories");
    const lanes = Math.max(1, this.opts.concurrency ?? 1);
    await Promise.all(Array.from({ length: lanes }, () => this.lane(jobs, trajectories)));
  }

  /** One job at a time, until stopped; `concurrency` lanes share the queue. */
  private async lane(jobs: Queue, trajectories: Queue): Promise<void> {
    while (this.running) {
      let msgs: QueueMessage[];
      try {
        msgs = await jobs.pull(this.opts.group, { max: 1, expiresMs: 1000 });
      } catch (err) {
        if (!this.running) break;
        this.opts.log?.(`rollout: pulling jobs failed: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      for (const msg of msgs) await this.handle(msg, trajectories);
    }
  }

  private async handle(msg: QueueMessage, out: Queue): Promise<void> {
    let job: ReturnType<typeof fromBinary<typeof PromptJobSchema>>;
    try {
      job = fromBinary(PromptJobSchema, msg.data);
    } catch (err) {
      // A job nobody can decode would be redelivered forever: log it and drop it.
      this.opts.log?.(`rollout: dropping undecodable job ${msg.msgId}: ${(err as Error).message}`);
      await msg.ack();
      return;
    }
    const traceparent = msg.headers.traceparent ?? newTraceparent();
    const collectJob: CollectJob = {
      runId: job.runId,
      step: Number(job.step),
      index: job.index,
      prompt: job.prompt,
      samples: job.samples,
      sampling: job.sampling ?? {},
      minWeightsVersion: Number(job.minWeightsVersion),
      traceparent,
    };
    let trajs: Trajectory[];
    try {
      trajs = await collectPrompt(this.policy, this.feedback, collectJob, this.opts.rpcTimeoutMs);
    } catch (err) {
      if (err instanceof StaleWeightsError) {
        // The replica has not swapped to the job's version yet: give it back shortly.
        await msg.nak(100);
        return;
      }
      this.counters.jobsFailed++;
      const message = (err as Error).message;
      const retryable = err instanceof PeerError || err instanceof ValidationError;
      if (retryable && msg.deliveryCount < this.maxAttempts) {
        const delay = Math.min(5000, 250 * 2 ** Math.min(msg.deliveryCount, 5));
        this.opts.log?.(
          `rollout: job ${msg.msgId} failed (attempt ${msg.deliveryCount}), retrying in ${delay} ms: ${message}`,
        );
        await msg.nak(delay);
        return;
      }
      // Retrying cannot help (or the attempts are spent): report the samples as failed.
      this.opts.log?.(
        `rollout: job ${msg.msgId} failed for good after ${msg.deliveryCount} attempt(s): ${message}`,
      );
      trajs = failedTrajectories(collectJob, message);
    }
    try {
      for (const t of trajs) {
        const ack = await out.publish(toBinary(TrajectorySchema, t), {
          msgId: t.id,
          headers: { traceparent },
        });
        if (!ack.duplicate) this.counters.trajectoriesPublished++;
        if (!t.error) this.counters.lastWeightsVersion = Number(t.weightsVersion);
      }
      await msg.ack();
      if (!trajs.some((t) => t.error)) this.counters.jobsCompleted++;
    } catch (err) {
      // Publishing failed part-way: the job is redelivered and the ids dedup what already went out.
      this.opts.log?.(`rollout: publishing job ${msg.msgId} failed, will retry: ${(err as Error).message}`);
      await msg.nak(1000);
    }
  }
}
