/**
 * Starts a Rollout worker as a gRPC server: with a bus it pulls prompt jobs and publishes scored
 * trajectories; it always serves the ad-hoc Collect rpc. It reaches the Policy and the Feedback
 * service by address, so any FeedbackService implementation can be plugged in.
 */
import { FeedbackService } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { PolicyService } from "../core/gen/rlaif/policy/v1/policy_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import { ROLLOUT_CONSUMER } from "../core/src/bus/subjects.js";
import { defaultConfig } from "../core/src/config/settings.js";
import { createClient } from "../core/src/grpc/client.js";
import type { GrpcSecurity } from "../core/src/grpc/credentials.js";
import { implement, type RunningServer, startServer } from "../core/src/grpc/server.js";
import { observeAtScrape } from "../core/src/ops/metrics.js";
import { RolloutService, rolloutService } from "./rollout-service.js";
import { RolloutWorker } from "./rollout-worker.js";
import { ScorerGuard } from "./scorer-guard.js";

/** How Score calls are retried and when a scorer's circuit opens (the `services.scorer*` settings). */
export interface ScorerRetrySettings {
  scorerAttempts: number;
  scorerBackoffMs: number;
  scorerBreakerFailures: number;
  scorerBreakerCoolDownMs: number;
}

/** Options of a Rollout server. */
export interface RolloutServerOptions {
  host?: string;
  port: number;
  /** TLS/mTLS of its gRPC server and of its Policy and Feedback clients; default plaintext. */
  security?: GrpcSecurity;
  policyAddress: string;
  feedbackAddress: string;
  /** Deadline of each Policy call. */
  rpcTimeoutMs: number;
  /** Deadline of each Feedback call (default: the `services.feedbackTimeoutMs` setting's). */
  feedbackTimeoutMs?: number;
  /** Without a bus no worker runs (Collect only). */
  bus?: Bus;
  /** Prompt jobs in flight at once (default: the `services.rolloutConcurrency` setting's). */
  concurrency?: number;
  /** How long a job's failing calls are retried before it is given back (default: `services.rolloutRetryMs`'s). */
  retryMs?: number;
  /** Deliveries of a job before it is dead-lettered (default: `services.rolloutMaxDeliver`'s). */
  maxDeliver?: number;
  /** Score retries and circuit breaker (default: the `services.scorer*` settings'). */
  scorer?: ScorerRetrySettings;
  log?: (line: string) => void;
}

/** A running Rollout server. */
export interface RolloutServer {
  server: RunningServer;
  worker: RolloutWorker | null;
  close(): Promise<void>;
}

/** Start a Rollout server (and its queue worker when a bus is given). */
export async function startRolloutServer(opts: RolloutServerOptions): Promise<RolloutServer> {
  // Round-robin over every address the name resolves to: behind a headless Kubernetes Service
  // that is every Policy (or Feedback) pod, so sampling load spreads per request, not per
  // connection. With one address it is the same as the default pick-first.
  // Reconnect backoff capped at 2 s (grpc-js grows it to 2 min): a restarted peer is found again
  // within the worker's retry budget instead of minutes after it is back.
  const channelOptions = {
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    "grpc.initial_reconnect_backoff_ms": 500,
    "grpc.max_reconnect_backoff_ms": 2_000,
  };
  const clientOptions = {
    defaultTimeoutMs: opts.rpcTimeoutMs,
    channelOptions,
    ...(opts.security?.client ? { credentials: opts.security.client } : {}),
  };
  const policy = createClient(PolicyService, opts.policyAddress, clientOptions);
  const feedback = createClient(FeedbackService, opts.feedbackAddress, clientOptions);
  const defaults = defaultConfig().services;
  const scorer = opts.scorer ?? defaults;
  const feedbackTimeoutMs = opts.feedbackTimeoutMs ?? defaults.feedbackTimeoutMs;
  const retryMs = opts.retryMs ?? defaults.rolloutRetryMs;
  const guard = {
    scorerAttempts: scorer.scorerAttempts,
    scorerBackoffMs: scorer.scorerBackoffMs,
    breakerFailures: scorer.scorerBreakerFailures,
    breakerCoolDownMs: scorer.scorerBreakerCoolDownMs,
    feedbackName: opts.feedbackAddress,
  };
  const worker = opts.bus
    ? new RolloutWorker(opts.bus, policy, feedback, {
        group: ROLLOUT_CONSUMER,
        rpcTimeoutMs: opts.rpcTimeoutMs,
        feedbackTimeoutMs,
        concurrency: opts.concurrency ?? defaults.rolloutConcurrency,
        retryMs,
        maxDeliver: opts.maxDeliver ?? defaults.rolloutMaxDeliver,
        policyReplica: opts.policyAddress,
        ...guard,
        ...(opts.log ? { log: opts.log } : {}),
      })
    : null;
  // The Collect rpc shares the worker's guard (one circuit per scorer address), or has its own.
  const scorerGuard =
    worker?.scorer ??
    new ScorerGuard(feedback, {
      name: opts.feedbackAddress,
      timeoutMs: feedbackTimeoutMs,
      retryMs,
      attempts: guard.scorerAttempts,
      backoffMs: guard.scorerBackoffMs,
      breakerFailures: guard.breakerFailures,
      breakerCoolDownMs: guard.breakerCoolDownMs,
      ...(opts.log ? { log: opts.log } : {}),
    });
  const server = await startServer({
    ...(opts.host ? { host: opts.host } : {}),
    port: opts.port,
    services: [
      implement(
        RolloutService,
        rolloutService({
          policy,
          scorer: scorerGuard,
          policyAddress: opts.policyAddress,
          feedbackAddress: opts.feedbackAddress,
          counters: worker?.counters ?? {
            jobsCompleted: 0,
            trajectoriesPublished: 0,
            jobsFailed: 0,
            lastWeightsVersion: 0,
            scorerTimeouts: 0,
          },
        }),
      ),
    ],
    ...(opts.security ? { security: opts.security } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  });
  worker?.start();
  const c = worker?.counters;
  const unobserve = c
    ? [
        observeAtScrape("rolloutJobs", () => [
          [{ outcome: "completed" }, c.jobsCompleted],
          [{ outcome: "failed" }, c.jobsFailed],
        ]),
        observeAtScrape("rolloutTrajectories", () => [[{}, c.trajectoriesPublished]]),
        observeAtScrape("scorerTimeouts", () => [[{}, c.scorerTimeouts]]),
      ]
    : [];
  return {
    server,
    worker,
    async close() {
      await worker?.stop();
      for (const stop of unobserve) stop();
      await server.shutdown(2000);
      policy.close();
      feedback.close();
    },
  };
}
