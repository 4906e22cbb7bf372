/**
 * The Rollout worker loop: pull a prompt job from the work queue, collect its trajectories,
 * publish them, and only then ack the job. A crash at any point leaves the job unacked, so it is
 * redelivered; trajectories are published with their id as `Nats-Msg-Id`, so a redelivered job
 * that had already published them produces duplicates the bus drops. Nothing is lost or doubled.
 *
 * How each delivery is tried (retries by time, waiting for a stale Policy) is job-attempts.ts;
 * how its Score calls are tried (deadline, bounded retries, batch limit, circuit breaker) is
 * scorer-guard.ts. When a delivery ends without trajectories the job is given back
 * for redelivery (to another lane, worker or replica); its `maxDeliver`-th delivery instead goes
 * to the dead-letter queue, and its samples are published as failed (the error says
 * "dead-lettered"), so the Optimizer excludes and counts them instead of waiting for them.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { PromptJobSchema, type Trajectory, TrajectorySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus, Queue, QueueMessage } from "../core/src/bus/bus.js";
import { DEAD_LETTERED, ValidationError } from "../core/src/errors.js";
import { ATTR, endSpan, inSpan, SpanKind, startSpan, traceparentOf } from "../core/src/telemetry/spans.js";
import {
  type CollectJob,
  collectPrompt,
  type FeedbackCaller,
  failedTrajectories,
  type PolicyCaller,
} from "./collect.js";
import {
  type AttemptContext,
  attemptJob,
  DEFAULT_ROLLOUT_RETRY_MS,
  DEFAULT_STALE_WAIT_MS,
  retryBackoffMs,
} from "./job-attempts.js";
import { ScorerGuard } from "./scorer-guard.js";

export { DEFAULT_ROLLOUT_RETRY_MS, DEFAULT_STALE_WAIT_MS, retryBackoffMs };

/** Counters reported by RolloutService.GetStatus (scorerTimeouts only in the metrics for now). */
export interface RolloutCounters {
  jobsCompleted: number;
  trajectoriesPublished: number;
  jobsFailed: number;
  lastWeightsVersion: number;
  /** Score operations whose samples were failed because the scorer timed out on every attempt. */
  scorerTimeouts: number;
}

/** Default deliveries of a job before it goes to the dead-letter queue. */
export const DEFAULT_ROLLOUT_MAX_DELIVER = 5;

/** Worker tuning. */
export interface RolloutWorkerOptions {
  /** Durable consumer group of the jobs queue; workers of one group share the jobs. */
  group: string;
  /** Deadline of each Policy call (and of each Feedback call unless `feedbackTimeoutMs` is set). */
  rpcTimeoutMs: number;
  /**
   * Deadline of each Feedback call attempt: a scorer that misses it on `scorerAttempts` attempts
   * has the job's samples failed (counted in `scorerTimeouts`) instead of holding the job.
   */
  feedbackTimeoutMs?: number;
  /** Attempts of a Score call that times out (default 3). */
  scorerAttempts?: number;
  /** First backoff between Score attempts (doubling, full jitter; default 200 ms). */
  scorerBackoffMs?: number;
  /** Consecutive failed Score operations that open the scorer's circuit (default 5). */
  breakerFailures?: number;
  /** Cool-down of an open circuit before one probe call (default 10 s). */
  breakerCoolDownMs?: number;
  /** Names the scorer in errors and logs (its address; default "feedback"). */
  feedbackName?: string;
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
    scorerTimeouts: 0,
  };
  private running = false;
  private readonly maxDeliver: number;
  /** Every Score call of this worker (and of the Collect rpc beside it) goes through it. */
  readonly scorer: ScorerGuard;
  /** What job-attempts.ts needs of this worker: its budgets, its pause, its counters. */
  private readonly attempts: AttemptContext;
  private loop: Promise<void> | null = null;
  /** Wakes every pause at once when the worker stops. */
  private readonly sleepers = new Set<() => void>();

  constructor(
    private readonly bus: Bus,
    private readonly policy: PolicyCaller,
    feedback: FeedbackCaller,
    private readonly opts: RolloutWorkerOptions,
  ) {
    const retryMs = opts.retryMs ?? DEFAULT_ROLLOUT_RETRY_MS;
    const staleWaitMs = opts.staleWaitMs ?? DEFAULT_STALE_WAIT_MS;
    this.maxDeliver = opts.maxDeliver ?? DEFAULT_ROLLOUT_MAX_DELIVER;
    const feedbackTimeoutMs = opts.feedbackTimeoutMs ?? opts.rpcTimeoutMs;
    if (!(retryMs >= 0)) throw new ValidationError("retryMs", `${opts.retryMs} must be >= 0`);
    if (!(staleWaitMs >= 0)) throw new ValidationError("staleWaitMs", `${opts.staleWaitMs} must be >= 0`);
    if (!(feedbackTimeoutMs > 0))
      throw new ValidationError("feedbackTimeoutMs", `${opts.feedbackTimeoutMs} must be > 0`);
    if (!(Number.isInteger(this.maxDeliver) && this.maxDeliver >= 1)) {
      throw new ValidationError("maxDeliver", `${opts.maxDeliver} must be a positive integer`);
    }
    this.attempts = {
      retryMs,
      staleWaitMs,
      running: () => this.running,
      pause: (ms) => this.pause(ms),
      log: (line) => this.log(line),
      counters: this.counters,
    };
    this.scorer = new ScorerGuard(feedback, {
      name: opts.feedbackName ?? "feedback",
      timeoutMs: feedbackTimeoutMs,
      retryMs,
      ...(opts.scorerAttempts !== undefined ? { attempts: opts.scorerAttempts } : {}),
      ...(opts.scorerBackoffMs !== undefined ? { backoffMs: opts.scorerBackoffMs } : {}),
      ...(opts.breakerFailures !== undefined ? { breakerFailures: opts.breakerFailures } : {}),
      ...(opts.breakerCoolDownMs !== undefined ? { breakerCoolDownMs: opts.breakerCoolDownMs } : {}),
      log: (line) => this.log(line),
      pause: (ms) => this.pause(ms),
      running: () => this.running,
      onTimedOut: () => {
        this.counters.scorerTimeouts++;
      },
    });
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
    const span = startSpan("rollout.job", msg.headers.traceparent, {
      kind: SpanKind.CONSUMER,
      attributes: { [ATTR.runId]: job.runId, [ATTR.step]: Number(job.step), [ATTR.promptIndex]: job.index },
    });
    const traceparent = traceparentOf(span) || msg.headers.traceparent || newTraceparent();
    try {
      // In the job's span: the lines it logs carry its trace id (telemetry/log-format.ts).
      await inSpan(span, () => this.handleJob(msg, job, traceparent, out, deadLetters));
    } finally {
      endSpan(span);
    }
  }

  /** {@link handle} of a decoded job inside its span (`traceparent` names that span). */
  private async handleJob(
    msg: QueueMessage,
    job: ReturnType<typeof fromBinary<typeof PromptJobSchema>>,
    traceparent: string,
    out: Queue,
    deadLetters: Queue,
  ): Promise<void> {
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
      const collect = () => collectPrompt(this.policy, this.scorer, collectJob, this.opts.rpcTimeoutMs);
      const outcome = await attemptJob(msg, collect, this.attempts);
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
    const span = startSpan("trajectories publish", traceparent, { kind: SpanKind.PRODUCER });
    const headers = { traceparent: traceparentOf(span) || traceparent };
    try {
      for (const t of trajs) {
        t.rolloutWorker = this.opts.workerId ?? `${hostname()}-${process.pid}`;
        t.policyReplica = this.opts.policyReplica ?? "";
        const ack = await out.publish(toBinary(TrajectorySchema, t), {
          msgId: t.id,
          headers,
        });
        if (!ack.duplicate) this.counters.trajectoriesPublished++;
        if (!t.error) this.counters.lastWeightsVersion = Number(t.weightsVersion);
      }
      await msg.ack();
      if (!trajs.some((t) => t.error)) this.counters.jobsCompleted++;
    } catch (err) {
      this.log(`rollout: publishing job ${msg.msgId} failed, will retry: ${(err as Error).message}`);
      await msg.nak(1000);
    } finally {
      endSpan(span);
    }
  }
}
