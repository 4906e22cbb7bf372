/**
 * Every metric the services export, declared once: name, type, unit, labels, help and the service
 * that exports it. Why a catalog: docs/metrics.md and the Grafana dashboard are checked against
 * it (test/ops-metrics.test.ts), so a renamed metric cannot silently empty a panel.
 */

/** Which process kind exports a metric ("every" = every service's gRPC server). */
export type MetricService = "optimizer" | "policy" | "rollout" | "feedback" | "every";

/** One exported metric. */
export interface MetricSpec {
  readonly name: string;
  readonly type: "counter" | "gauge" | "histogram";
  /** Prometheus base unit (seconds, bytes, nats, …) or "1" for a plain count or ratio. */
  readonly unit: string;
  readonly labels: readonly string[];
  readonly service: MetricService;
  readonly help: string;
  /** Histogram buckets (upper bounds, in `unit`). */
  readonly buckets?: readonly number[];
}

const RUN = ["run_id"] as const;
/** Seconds from 1 ms to 2 min: RPCs (a Generate of a batch takes ~0.1–3 s on CPU). */
const RPC_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];
/** Seconds from 0.1 s to 10 min: a step (1.4 s on the embedded default, minutes with big models). */
const STEP_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600];

/** The catalog, keyed by the name code uses to reach each metric (metrics.ts). */
export const METRIC_CATALOG = {
  step: {
    name: "rlaif_optimizer_step",
    type: "gauge",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "last completed optimizer step of the run (StepMetrics.step)",
  },
  steps: {
    name: "rlaif_optimizer_steps_total",
    type: "counter",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "optimizer steps completed by this process for the run",
  },
  rewardMean: {
    name: "rlaif_optimizer_reward_mean",
    type: "gauge",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "mean reward of the last step's applied samples (StepMetrics.mean_reward)",
  },
  rewardStd: {
    name: "rlaif_optimizer_reward_std",
    type: "gauge",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "standard deviation of the last step's rewards (StepMetrics.std_reward)",
  },
  kl: {
    name: "rlaif_optimizer_kl_nats",
    type: "gauge",
    unit: "nats",
    labels: RUN,
    service: "optimizer",
    help: "sampled KL to the reference per sample at the last step (StepMetrics.kl)",
  },
  entropy: {
    name: "rlaif_optimizer_entropy_nats",
    type: "gauge",
    unit: "nats",
    labels: RUN,
    service: "optimizer",
    help: "mean per-token policy entropy at the last step (StepMetrics.entropy)",
  },
  tokensPerSecond: {
    name: "rlaif_optimizer_tokens_per_second",
    type: "gauge",
    unit: "tokens/s",
    labels: RUN,
    service: "optimizer",
    help: "completion tokens per second of the last step (StepMetrics.tokens_per_second)",
  },
  trajectories: {
    name: "rlaif_optimizer_trajectories_total",
    type: "counter",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "trajectories applied by the run's updates",
  },
  stepDuration: {
    name: "rlaif_optimizer_step_duration_seconds",
    type: "histogram",
    unit: "seconds",
    labels: RUN,
    service: "optimizer",
    help: "wall time of each step, from its start to its metrics",
    buckets: STEP_BUCKETS,
  },
  staleness: {
    name: "rlaif_optimizer_sample_staleness_versions",
    type: "gauge",
    unit: "versions",
    labels: RUN,
    service: "optimizer",
    help: "mean weights versions the last step's samples lagged (StepMetrics.sample_staleness)",
  },
  samplesByStaleness: {
    name: "rlaif_optimizer_samples_by_staleness_total",
    type: "counter",
    unit: "1",
    labels: ["run_id", "staleness"],
    service: "optimizer",
    help: "applied samples by how many versions they lagged (StepMetrics.staleness_histogram; at most max-staleness + 1 values)",
  },
  excluded: {
    name: "rlaif_optimizer_samples_excluded_total",
    type: "counter",
    unit: "1",
    labels: ["run_id", "cause"],
    service: "optimizer",
    help: "samples left out of updates by cause (StepMetrics.excluded_by_cause: scorer_error, abstained, dead_lettered, …)",
  },
  dropped: {
    name: "rlaif_optimizer_samples_dropped_total",
    type: "counter",
    unit: "1",
    labels: ["run_id", "cause"],
    service: "optimizer",
    help: "trajectories dropped before a step by cause (StepMetrics.dropped_by_cause)",
  },
  deadLetters: {
    name: "rlaif_optimizer_dead_letters_total",
    type: "counter",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "samples of jobs the Rollout dead-lettered (StepMetrics.dead_lettered)",
  },
  queueDepth: {
    name: "rlaif_optimizer_queue_depth_messages",
    type: "gauge",
    unit: "messages",
    labels: ["queue"],
    service: "optimizer",
    help: "messages pending per queue at the last step: jobs, trajectories, trajectories_held",
  },
  weightsVersion: {
    name: "rlaif_optimizer_weights_version",
    type: "gauge",
    unit: "1",
    labels: RUN,
    service: "optimizer",
    help: "weights version the run last published",
  },
  weightsPublish: {
    name: "rlaif_optimizer_weights_publish_seconds",
    type: "histogram",
    unit: "seconds",
    labels: RUN,
    service: "optimizer",
    help: "time to publish a weights version (upload and pointer move; a staged version's pointer move only)",
    buckets: RPC_BUCKETS,
  },
  weightsBytes: {
    name: "rlaif_optimizer_weights_published_bytes_total",
    type: "counter",
    unit: "bytes",
    labels: RUN,
    service: "optimizer",
    help: "bytes of weights versions published (deltas count their own size)",
  },
  policyVersion: {
    name: "rlaif_policy_weights_version",
    type: "gauge",
    unit: "1",
    labels: ["replica"],
    service: "policy",
    help: "weights version the replica serves (0 = the starting checkpoint)",
  },
  rolloutJobs: {
    name: "rlaif_rollout_jobs_total",
    type: "counter",
    unit: "1",
    labels: ["outcome"],
    service: "rollout",
    help: "prompt jobs the worker finished, by outcome: completed or failed",
  },
  rolloutTrajectories: {
    name: "rlaif_rollout_trajectories_published_total",
    type: "counter",
    unit: "1",
    labels: [],
    service: "rollout",
    help: "trajectories the worker published",
  },
  scorerTimeouts: {
    name: "rlaif_rollout_scorer_timeouts_total",
    type: "counter",
    unit: "1",
    labels: [],
    service: "rollout",
    help: "deliveries given back because the FeedbackService did not answer in --feedback-timeout-ms",
  },
  feedbackItems: {
    name: "rlaif_feedback_items_scored_total",
    type: "counter",
    unit: "1",
    labels: ["status"],
    service: "feedback",
    help: "items the built-in FeedbackService scored, by ScoreStatus (ok, abstain, error, …)",
  },
  rpcDuration: {
    name: "rlaif_rpc_server_duration_seconds",
    type: "histogram",
    unit: "seconds",
    labels: ["method", "code"],
    service: "every",
    help: "server-side gRPC call time by method (full path) and status code name",
    buckets: RPC_BUCKETS,
  },
} as const satisfies Record<string, MetricSpec>;

/** A key of {@link METRIC_CATALOG}. */
export type MetricKey = keyof typeof METRIC_CATALOG;

/** The catalog's keys of one metric type. */
export type MetricKeyOf<T extends MetricSpec["type"]> = {
  [K in MetricKey]: (typeof METRIC_CATALOG)[K]["type"] extends T ? K : never;
}[MetricKey];

/**
 * The sample names Prometheus stores for a metric: a histogram's `_bucket`, `_sum` and `_count`
 * series besides its own name (what PromQL may name).
 */
export function seriesNames(spec: MetricSpec): string[] {
  return spec.type === "histogram"
    ? [`${spec.name}_bucket`, `${spec.name}_sum`, `${spec.name}_count`]
    : [spec.name];
}
