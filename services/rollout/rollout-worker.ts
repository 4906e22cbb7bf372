/**
 * The Rollout worker loop: pull a prompt job from the work queue, collect its trajectories,
 * publish them, and only then ack the job. A crash at any point leaves the job unacked, so it is
 * redelivered; trajectories are published with their id as `Nats-Msg-Id`, so a redelivered job
 * that had already published them produces duplicates the bus drops. Nothing is lost or doubled.
 *
 * Failures are retried by time, not by count: a Policy or Feedback call that fails is tried again
 * with backoff for up to `retryMs` (long enough to ride out a service restart), holding the job
 * meanwhile (in-progress signals restart its ack wait). A Policy still on older weights than the
 * job needs is waited for without spending that budget. When the budget is spent the job is given
 * back for redelivery (to another lane, worker or replica); its `maxDeliver`-th delivery instead
 * goes to the dead-letter queue, and its samples are published as failed (the error says
 * "dead-lettered"), so the Optimizer excludes and counts them instead of waiting for them.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { PromptJobSchema, type Trajectory, TrajectorySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus, Queue, QueueMessage } from "../core/src/bus/bus.js";
import { DEAD_LETTERED, PeerError, StaleWeightsError, ValidationError } from "../core/src/errors.js";
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

/** Default time a failing job is retried before it is given back for redelivery. */
export const DEFAULT_ROLLOUT_RETRY_MS = 30_000;
/** Default deliveries of a job before it goes to the dead-letter queue. */
export const DEFAULT_ROLLOUT_MAX_DELIVER = 5;
/** How often a held job's ack wait is restarted (well inside the default 30 s ack wait). */
const IN_PROGRESS_EVERY_MS = 5_000;
/** Longest pause between two tries of a failing or stale job. */
const MAX_BACKOFF_MS = 2_000;
/**
 * Default longest wait, per delivery, for a Policy to serve the weights a job needs: a replica
 * swaps within seconds (a restarted one within its model load), so past a minute the job's run
 * is likely gone and the job is given back instead of holding a lane.
 */
export const DEFAULT_STALE_WAIT_MS = 60_000;

/** Worker tuning. */
export interface RolloutWorkerOptions {
  /** Durable consumer group of the jobs queue; workers of one group share the jobs. */
  group: string;
  /** Deadline of each Policy/Feedback call. */
  rpcTimeoutMs: number;
  /** Called with a line to log (failures, malformed jobs). */
  log?: (line: string) => void;
  /**
   * How long one delivery of a job keeps retrying failing calls (default 30 s) before the job is
   * given back for redelivery. Waiting for a stale Policy to swap weights does not count.
   */
  retryMs?: number;
  /** Deliveries of a job before it is dead-lettered and its samples reported failed (default 5). */
  maxDeliver?: number;
  /** Longest wait per delivery for the Policy to serve a job's weights version (default 60 s). */
  staleWaitMs?: number;
  /**
   * Jobs in flight at once (default 1). Several let the Policy batch their samples together: a
   * step's jobs are decoded in one batch instead of one after another.
   */
  concurrency?: number;
  /** Stamped on every trajectory as `rollout_worker` (default "<hostname>-<pid>"). */
  workerId?: string;
  /** Stamped on every trajectory as `policy_replica`: the Policy this worker samples from. */
  policyReplica?: string;
}

/** How one delivery's tries ended. */
type Outcome =
  | { kind: "collected"; trajs: Trajectory[] }
  /** Retrying cannot help (the peer refused the request itself): report the samples failed. */
  | { kind: "refused"; error: string }
  /** The retry budget is spent (or the worker stops): give it back for redelivery. */
  | { kind: "giveBack"; error: string };

/** A fresh W3C traceparent (version 00, sampled), so one sample can be followed across services. */
export function newTraceparent(): string {
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
}

/** Pause before try `n` (1-based) of a failing job: 250 ms doubling, at most 2 s. */
export function retryBackoffMs(n: number): number {
  return Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.max(0, n - 1));
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
  private readonly retryMs: number;
  private readonly maxDeliver: number;
  private readonly staleWaitMs: number;
  private loop: Promise<void> | null = null;
  /** Wakes every pause at once when the worker stops. */
  private readonly sleepers = new Set<() => void>();

  constructor(
    private readonly bus: Bus,
    private readonly policy: PolicyCaller,
    private readonly feedback: FeedbackCaller,
    private readonly opts: RolloutWorkerOptions,
  ) {
    this.retryMs = opts.retryMs ?? DEFAULT_ROLLOUT_RETRY_MS;
    this.maxDeliver = opts.maxDeliver ?? DEFAULT_ROLLOUT_MAX_DELIVER;
    this.staleWaitMs = opts.staleWaitMs ?? DEFAULT_STALE_WAIT_MS;
    if (!(this.retryMs >= 0)) throw new ValidationError("retryMs", `${opts.retryMs} must be >= 0`);
    if (!(this.staleWaitMs >= 0))
      throw new ValidationError("staleWaitMs", `${opts.staleWaitMs} must be >= 0`);
    if (!(Number.isInteger(this.maxDeliver) && this.maxDeliver >= 1)) {
      throw new ValidationError("maxDeliver", `${opts.maxDeliver} must be a positive integer`);
    }
  }

  /** Start the pull loop (idempotent). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run().catch((err: unknown) => {
      this.log(`rollout: worker stopped: ${(err as Error).message}`);
    });
  }

  /** Stop after the jobs in hand (a job being retried is given back); resolves when every lane has exited. */
  async stop(): Promise<void> {
    this.running = false;
    for (const wake of [...this.sleepers]) wake();
    await this.loop;
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  /** Sleep `ms`, or less if the worker stops meanwhile. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  private async run(): Promise<void> {
    // Opening the queues waits out a bus that is not up yet, until the worker is stopped.
    for (let tries = 1; this.running; tries++) {
      try {
        const queues = {
          jobs: await this.bus.queue("jobs"),
          trajectories: await this.bus.queue("trajectories"),
          deadLetters: await this.bus.queue("deadLetters"),
        };
        const lanes = Math.max(1, this.opts.concurrency ?? 1);
        await Promise.all(Array.from({ length: lanes }, () => this.lane(queues)));
        return;
      } catch (err) {
        if (!this.running) return;
        this.log(`rollout: opening the queues failed (try ${tries}): ${(err as Error).message}`);
        await this.pause(retryBackoffMs(tries));
      }
    }
  }

  /** One job at a time, until stopped; `concurrency` lanes share the queue. */
  private async lane(queues: Record<"jobs" | "trajectories" | "deadLetters", Queue>): Promise<void> {
    while (this.running) {
      let msgs: QueueMessage[];
      try {
        msgs = await queues.jobs.pull(this.opts.group, { max: 1, expiresMs: 1000 });
      } catch (err) {
        if (!this.running) break;
        this.log(`rollout: pulling jobs failed: ${(err as Error).message}`);
        await this.pause(500);
        continue;
      }
      for (const msg of msgs) {
        try {
          await this.handle(msg, queues.trajectories, queues.deadLetters);
        } catch (err) {
          // Unsettled, the job comes back after its ack wait: nothing is lost, nothing crashes.
          this.log(`rollout: job ${msg.msgId} left for redelivery: ${(err as Error).message}`);
        }
      }
    }
  }

  private async handle(msg: QueueMessage, out: Queue, deadLetters: Queue): Promise<void> {
    let job: ReturnType<typeof fromBinary<typeof PromptJobSchema>>;
    try {
      job = fromBinary(PromptJobSchema, msg.data);
    } catch (err) {
      // A job nobody can decode would be redelivered forever: log it and drop it.
      this.log(`rollout: dropping undecodable job ${msg.msgId}: ${(err as Error).message}`);
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
    if (msg.deliveryCount > this.maxDeliver) {
      // Its earlier holders died or gave it back without an answer: stop the redeliveries here.
      trajs = await this.deadLetter(msg, collectJob, deadLetters, "no delivery produced trajectories");
    } else {
      const outcome = await this.tries(msg, collectJob);
      if (outcome.kind === "collected") trajs = outcome.trajs;
      else if (outcome.kind === "refused") {
        this.log(`rollout: job ${msg.msgId} refused, its samples are failed: ${outcome.error}`);
        trajs = failedTrajectories(collectJob, outcome.error);
      } else if (msg.deliveryCount >= this.maxDeliver && this.running) {
        trajs = await this.deadLetter(msg, collectJob, deadLetters, outcome.error);
      } else {
        this.log(
          `rollout: job ${msg.msgId} given back for redelivery (delivery ${msg.deliveryCount} of ${this.maxDeliver}): ${outcome.error}`,
        );
        await msg.nak(this.running ? 1000 : 0);
        return;
      }
    }
    await this.publish(msg, trajs, out, traceparent);
  }

  /**
   * Collect the job, retrying failures with backoff until `retryMs` has passed since the first
   * failing try began, and waiting (without spending that budget) while the Policy's weights are
   * older than the job needs, for at most `staleWaitMs`. The job's ack wait is restarted
   * meanwhile, so no other worker gets it while this one still tries.
   */
  private async tries(msg: QueueMessage, job: CollectJob): Promise<Outcome> {
    const keepAlive = setInterval(() => msg.inProgress().catch(() => undefined), IN_PROGRESS_EVERY_MS);
    let failingSince: number | null = null;
    let staleSince: number | null = null;
    let failures = 0;
    let stale = 0;
    try {
      for (;;) {
        const started = performance.now();
        try {
          return {
            kind: "collected",
            trajs: await collectPrompt(this.policy, this.feedback, job, this.opts.rpcTimeoutMs),
          };
        } catch (err) {
          const error = (err as Error).message;
          if (!this.running) return { kind: "giveBack", error: `worker stopping (${error})` };
          if (err instanceof StaleWeightsError) {
            // Not a failure: the replica has not swapped to the job's version yet.
            staleSince ??= started;
            if (performance.now() - staleSince > this.staleWaitMs) return { kind: "giveBack", error };
            await this.pause(Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(stale++, 4)));
            continue;
          }
          this.counters.jobsFailed++;
          if (!(err instanceof PeerError || err instanceof ValidationError))
            return { kind: "refused", error };
          failingSince ??= started;
          const delay = retryBackoffMs(++failures);
          if (performance.now() + delay - failingSince > this.retryMs) {
            return { kind: "giveBack", error: `failing for ${this.retryMs} ms: ${error}` };
          }
          this.log(
            `rollout: job ${msg.msgId} failed (attempt ${failures}, delivery ${msg.deliveryCount}), retrying in ${delay} ms: ${error}`,
          );
          await this.pause(delay);
        }
      }
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** Park the job on the dead-letter queue; its samples are reported failed, naming the cause. */
  private async deadLetter(
    msg: QueueMessage,
    job: CollectJob,
    deadLetters: Queue,
    why: string,
  ): Promise<Trajectory[]> {
    const error = `${DEAD_LETTERED} after ${msg.deliveryCount} deliveries: ${why}`;
    await deadLetters.publish(msg.data, {
      msgId: msg.msgId || `${job.runId}.${job.step}.${job.index}`,
      headers: { ...msg.headers, "rlaif-error": error.slice(0, 1000) },
    });
    this.log(`rollout: job ${msg.msgId} sent to the dead-letter queue, its samples are failed: ${error}`);
    return failedTrajectories(job, error);
  }

  /** Publish the job's trajectories, then ack it; a failure part-way gives it back (ids dedup). */
  private async publish(
    msg: QueueMessage,
    trajs: Trajectory[],
    out: Queue,
    traceparent: string,
  ): Promise<void> {
    try {
      for (const t of trajs) {
        t.rolloutWorker = this.opts.workerId ?? `${hostname()}-${process.pid}`;
        t.policyReplica = this.opts.policyReplica ?? "";
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
      this.log(`rollout: publishing job ${msg.msgId} failed, will retry: ${(err as Error).message}`);
      await msg.nak(1000);
    }
  }
}
