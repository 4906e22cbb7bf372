/**
 * The four services in one process (docs/architecture.md#modes, the embedded default): real gRPC servers on loopback
 * ports and one bus — the in-memory bus without a NATS URL, NATS JetStream with one. The code
 * path is the distributed one; only the process boundaries are missing. The Policy runs in a
 * worker thread of its own (policy-thread.ts) unless `services.policyIn` is "main", so sampling
 * and learning can use two cores.
 */
import type { Bus } from "../core/src/bus/bus.js";
import { MemoryBus } from "../core/src/bus/memory-bus.js";
import { type NatsCredentialSources, natsClientAuth } from "../core/src/bus/nats-auth.js";
import { NatsBus } from "../core/src/bus/nats-bus.js";
import { checkOneFeedback } from "../core/src/config/scorer-flags.js";
import type { RlaifConfig } from "../core/src/config/settings.js";
import type { TracingConfig } from "../core/src/telemetry/tracing.js";
import { clusterWeightsKeys } from "../core/src/weights/weights-keys.js";
import { scorerFromSettings, startFeedbackServer } from "../feedback/main.js";
import { type OptimizerServer, startOptimizerServer } from "../optimizer/main.js";
import { startPolicyServer } from "../policy/main.js";
import { type RolloutServer, startRolloutServer } from "../rollout/main.js";
import { type PolicyThread, startPolicyThread } from "./policy-thread.js";

/**
 * The bus a configuration asks for: NATS when a URL is set, else in-memory. With `credentials`
 * (services.natsUser / natsPassword / natsCreds, or RLAIF_NATS_USER / RLAIF_NATS_PASSWORD) it
 * connects as that user, so `rlaif train --nats` works against a server that requires users;
 * the one connection carries every service of the process, so that user needs all their grants.
 */
export async function connectBus(natsUrl: string, credentials?: NatsCredentialSources): Promise<Bus> {
  if (!natsUrl) return new MemoryBus();
  const auth = credentials ? natsClientAuth(credentials) : {};
  return NatsBus.connect(natsUrl, { name: "rlaif-train", auth });
}

/** Addresses and handles of an embedded cluster. */
export interface EmbeddedCluster {
  bus: Bus;
  /** Address of the Policy server (in its own thread, or on the main thread). */
  policyAddress: string;
  /** The Policy's thread; null when it runs on the main thread (`services.policyIn` "main"). */
  policyThread: PolicyThread | null;
  rollout: RolloutServer;
  optimizer: OptimizerServer;
  /** Address of the Feedback service in use (built-in or external). */
  feedbackAddress: string;
  close(): Promise<void>;
}

/** What {@link startEmbeddedCluster} may be given besides the configuration. */
export interface EmbeddedClusterOptions {
  /**
   * Tracing of the Policy's worker thread, which has OTel globals of its own (the main thread's
   * is started by the caller, `rlaif train`); absent: the thread records no spans.
   */
  policyTracing?: TracingConfig;
}

/** The Policy in its own thread, or on this one (`services.policyIn`). */
async function startPolicy(
  config: RlaifConfig,
  bus: Bus,
  log: ((line: string) => void) | undefined,
  weightsVerifyKey: string,
  tracing: TracingConfig | undefined,
): Promise<{ address: string; thread: PolicyThread | null; close(): Promise<void> }> {
  const { services } = config;
  const opts = {
    host: "127.0.0.1",
    checkpoint: services.checkpoint,
    weightsVerifyKey,
    bus,
    backend: services.backend,
    batchRows: services.policyBatchRows,
    queueRows: services.policyQueueRows,
  };
  if (services.policyIn === "main") {
    const server = await startPolicyServer({ ...opts, port: 0, ...(log ? { log } : {}) });
    return { address: server.server.address, thread: null, close: () => server.close() };
  }
  const thread = await startPolicyThread({
    ...opts,
    ...(log ? { log } : {}),
    ...(tracing ? { tracing } : {}),
    // The Rollout's retries would hide a dead Policy behind UNAVAILABLE: say what happened.
    onFailure: (err) => (log ?? console.error)(`policy: ${err.message}`),
  });
  return { address: thread.address, thread, close: () => thread.close() };
}

/** Start Feedback (unless an external one is configured), Policy, Rollout and Optimizer. */
export async function startEmbeddedCluster(
  config: RlaifConfig,
  log?: (line: string) => void,
  opts: EmbeddedClusterOptions = {},
): Promise<EmbeddedCluster> {
  const { services } = config;
  const host = "127.0.0.1";
  const logOpt = log ? { log } : {};
  const bus = await connectBus(services.natsUrl, services);
  const closers: (() => Promise<void>)[] = [() => bus.close()];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  };
  try {
    // Signed weights: the configured key pair, or one made for this run (removed on close).
    const keys = await clusterWeightsKeys(services);
    closers.push(() => keys.dispose());
    checkOneFeedback(services);
    let feedbackAddress = services.feedbackAddress;
    if (!feedbackAddress) {
      const scorer = await scorerFromSettings(services);
      const feedback = await startFeedbackServer({ host, port: 0, scorer, ...logOpt });
      closers.push(() => feedback.shutdown(1000));
      feedbackAddress = feedback.address;
    }
    const policy = await startPolicy(config, bus, log, keys.verifyKey, opts.policyTracing);
    closers.push(() => policy.close());
    const rollout = await startRolloutServer({
      host,
      port: 0,
      policyAddress: policy.address,
      feedbackAddress,
      rpcTimeoutMs: services.rpcTimeoutMs,
      feedbackTimeoutMs: services.feedbackTimeoutMs,
      bus,
      concurrency: services.rolloutConcurrency,
      scorer: services,
      ...logOpt,
    });
    closers.push(() => rollout.close());
    const optimizer = await startOptimizerServer({
      host,
      port: 0,
      bus,
      checkpoint: services.checkpoint,
      settings: config.run,
      outDir: config.out,
      stepTimeoutMs: services.stepTimeoutMs,
      backend: services.backend,
      learnerIn: services.learnerIn,
      weightsSigningKey: keys.signingKey,
      weightsRetention: services.weightsRetention,
      weightsFullEvery: services.weightsFullEvery,
      mode: "embedded",
      provenance: {
        bus: services.natsUrl || "embedded",
        feedbackAddress,
        feedbackInProcess: !services.feedbackAddress,
      },
      ...logOpt,
    });
    closers.push(() => optimizer.close());
    return {
      bus,
      policyAddress: policy.address,
      policyThread: policy.thread,
      rollout,
      optimizer,
      feedbackAddress,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
