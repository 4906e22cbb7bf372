/**
 * A local distributed cluster for `rlaif up`: a `nats-server` from PATH and one `rlaif serve`
 * process per service, each on a free port, each supervised (supervisor.ts): a process that
 * dies is started again on the same port (the others were given its address), nats-server on
 * the same store, and the Optimizer with `--resume-unfinished`, so it picks its run up from the
 * last checkpoint. `close()` stops the services (SIGTERM: each drains, SIGKILL after the
 * Kubernetes default grace of 30 s) from the Optimizer down, then NATS; a failed start tears
 * down what was started. The server admits only one user per service, with that service's
 * subject permissions and a fresh random password passed in the service's environment (never on
 * its command line); weights are signed with the configured key pair or one made for the cluster.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NATS_PASSWORD_ENV, NATS_USER_ENV, type NatsUser, serviceUsers } from "../core/src/bus/nats-auth.js";
import { freePort, startNatsServer } from "../core/src/bus/nats-server.js";
import { changedSettingArgs, checkOneFeedback, SCORER_FLAGS } from "../core/src/config/scorer-flags.js";
import type { RlaifConfig } from "../core/src/config/settings.js";
import { RlaifError } from "../core/src/errors.js";
import { CONTROL_TOKEN_ENV, resolveControlToken } from "../core/src/grpc/control-token.js";
import { clusterWeightsKeys } from "../core/src/weights/weights-keys.js";
import {
  guardedInstance,
  type ServiceInstance,
  STOP_GRACE_MS,
  startServiceProcess,
} from "./service-process.js";
import {
  describeExit,
  type ProcessInstance,
  type RestartPolicy,
  Supervisor,
  type SupervisorOptions,
} from "./supervisor.js";

/** A running local cluster. */
export interface LocalCluster {
  natsUrl: string;
  /** host:port of each service ("feedback" is the external one when configured). */
  addresses: { policy: string; rollout: string; feedback: string; optimizer: string };
  /** host:port of each service process's ops HTTP server (/metrics, /healthz; docs/metrics.md). */
  metricsAddresses: Record<string, string>;
  /** Process ids of the service processes now, by service (a restart changes its pid). */
  readonly pids: Record<string, number>;
  /** The supervisor of each process: "nats" and each service started. */
  readonly supervisors: Readonly<Record<string, Supervisor<ProcessInstance>>>;
  /** Rejects with ServiceFailedError when a process keeps dying (its restart cap); never resolves. */
  readonly failed: Promise<never>;
  close(): Promise<void>;
}

/** The order in which `close()` stops the processes; each stage's together. */
const STOP_ORDER = [["optimizer"], ["rollout"], ["policy", "feedback"], ["nats"]];

/** Options of {@link startLocalCluster}. */
export interface LocalClusterOptions {
  /** Aborting it stops the cluster, also while it starts (SIGINT/SIGTERM to `rlaif up`). */
  signal?: AbortSignal;
  /** Restart rules of every process (default DEFAULT_RESTART_POLICY). */
  restartPolicy?: Partial<RestartPolicy>;
}

/** The environment that makes a service connect to NATS as `user`. */
function natsEnv(user: NatsUser): Record<string, string> {
  return { [NATS_USER_ENV]: user.user, [NATS_PASSWORD_ENV]: user.password };
}

/** The TLS flags of every service: the same files for all, as one cluster has one CA. */
function tlsFlags(s: RlaifConfig["services"]): string[] {
  const given: [string, string][] = [
    ["--tls-cert", s.tlsCert],
    ["--tls-key", s.tlsKey],
    ["--tls-ca", s.tlsCa],
    ["--tls-client-auth", s.tlsClientAuth === "none" ? "" : s.tlsClientAuth],
  ];
  return given.flatMap(([flag, value]) => (value ? [flag, value] : []));
}

/**
 * The log format and OTLP endpoint every service gets, so `rlaif up --log-format json
 * --otlp-endpoint …` applies to its processes as `rlaif serve` applies them to itself; the
 * OTLP headers (an API key) travel in the environment, never on a command line.
 */
function telemetry(s: RlaifConfig["services"]): { flags: string[]; env: Record<string, string> } {
  const flags = ["--log-format", s.logFormat, ...(s.otlpEndpoint ? ["--otlp-endpoint", s.otlpEndpoint] : [])];
  return { flags, env: s.otlpHeaders ? { OTEL_EXPORTER_OTLP_HEADERS: s.otlpHeaders } : {} };
}

/** Start NATS and the four services (three when the feedback service is external). */
export async function startLocalCluster(
  config: RlaifConfig,
  log: (line: string) => void,
  opts: LocalClusterOptions = {},
): Promise<LocalCluster> {
  checkOneFeedback(config.services);
  // Signed weights: the configured key pair, or one made for this cluster (removed on close).
  const keys = await clusterWeightsKeys(config.services);
  const users = serviceUsers();
  const storeDir = await mkdtemp(join(tmpdir(), "rlaif-up-nats-"));
  const supervisors: Record<string, Supervisor<ProcessInstance>> = {};
  const stopping = new AbortController();
  /** First starts under way: close() waits for them to end, so no child outlives it. */
  const starting = new Set<Promise<unknown>>();
  const supervise = <P extends ProcessInstance>(
    key: string,
    o: Omit<SupervisorOptions<P>, "log" | "policy">,
  ): Promise<P> => {
    const policy = opts.restartPolicy ? { policy: opts.restartPolicy } : {};
    const started = (async () => {
      const s = await Supervisor.start({ ...o, log, ...policy });
      if (stopping.signal.aborted) {
        // Closed while this one started (a signal): it must not outlive the cluster.
        await s.stop(STOP_GRACE_MS);
        throw new RlaifError(`the cluster was stopped while ${o.name} started`);
      }
      supervisors[key] = s;
      return s.current;
    })();
    starting.add(started);
    const forget = () => starting.delete(started);
    started.then(forget, forget);
    return started;
  };
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      // A start under way is stopped by the abort (its child gets SIGTERM) and ends.
      stopping.abort();
      await Promise.allSettled([...starting]);
      const stop = async (key: string) => {
        const s = supervisors[key] as Supervisor<ProcessInstance>;
        const { pid } = s;
        const t0 = performance.now();
        const status = await s.stop(STOP_GRACE_MS);
        const took = ((performance.now() - t0) / 1000).toFixed(1);
        if (status) log(`rlaif up: stopped ${key} (pid ${pid}): ${describeExit(status)} after ${took} s`);
      };
      // Upstream first, so each drains while what it calls still serves: the Optimizer stops
      // queueing jobs, the Rollout finishes the jobs in hand against a live Policy and Feedback,
      // then those two, and NATS last.
      for (const stage of STOP_ORDER) {
        await Promise.all(stage.filter((k) => supervisors[k]).map(stop));
      }
      await rm(storeDir, { recursive: true, force: true });
      await keys.dispose();
    })();
    return closing;
  };
  opts.signal?.addEventListener("abort", () => void close(), { once: true });

  let natsPort: number | undefined;
  const first = await supervise("nats", {
    name: "nats-server",
    start: async () => {
      const nats = await startNatsServer({
        storeDir,
        users: Object.values(users),
        ...(natsPort ? { port: natsPort } : {}),
      });
      natsPort = Number(new URL(nats.url).port);
      return { ...guardedInstance(nats.pid, nats.exited, () => void nats.stop()), url: nats.url };
    },
  }).catch(async (err: unknown) => {
    await close();
    throw err;
  });
  const natsUrl = first.url;

  /**
   * A service, restarted on the port of its first start; `restartArgs` go to restarts only, `env`
   * (its NATS user, the control token) to every start.
   */
  const service = (
    name: string,
    args: string[],
    restartArgs: string[] = [],
    env: Readonly<Record<string, string>> = {},
  ) => {
    let port = 0;
    // A metrics port of its own, the same on restarts, so a scraper's target stays put.
    const metrics = freePort().then((p) => {
      metricsAddresses[name] = `127.0.0.1:${p}`;
      return ["--metrics-port", String(p)];
    });
    return supervise<ServiceInstance>(name, {
      name,
      start: async (restart) => {
        const extra = [...(restart > 0 ? restartArgs : []), ...(await metrics)];
        const argv = [...args, ...otel.flags, ...extra];
        const s = await startServiceProcess(name, port, argv, log, stopping.signal, { ...otel.env, ...env });
        port = s.port;
        return s;
      },
    });
  };
  const metricsAddresses: Record<string, string> = {};
  const s = config.services;
  const tls = tlsFlags(s);
  const otel = telemetry(s);
  const token = resolveControlToken(s);
  // Each service gets the flags its own `rlaif serve <service>` takes.
  const natsFlags = ["--nats", natsUrl];
  const model = ["--checkpoint", s.checkpoint, "--backend", s.backend];
  try {
    const [feedback, policy] = await Promise.all([
      s.feedbackAddress
        ? null
        : service("feedback", [...tls, ...changedSettingArgs(s, [...SCORER_FLAGS, "backend"])]),
      service(
        "policy",
        [
          ...natsFlags,
          ...model,
          ...["--policy-batch-rows", String(s.policyBatchRows)],
          ...["--policy-queue-rows", String(s.policyQueueRows)],
          ...["--weights-verify-key", keys.verifyKey],
          ...tls,
        ],
        [],
        natsEnv(users.policy),
      ),
    ]);
    const feedbackAddress = s.feedbackAddress || (feedback as ServiceInstance).address;
    const [rollout, optimizer] = await Promise.all([
      service(
        "rollout",
        [
          ...natsFlags,
          ...["--rpc-timeout-ms", String(s.rpcTimeoutMs)],
          ...["--feedback-timeout-ms", String(s.feedbackTimeoutMs)],
          ...["--rollout-concurrency", String(s.rolloutConcurrency)],
          ...["--policy-address", policy.address],
          ...["--feedback-address", feedbackAddress],
          ...tls,
        ],
        [],
        natsEnv(users.rollout),
      ),
      service(
        "optimizer",
        [
          ...natsFlags,
          ...model,
          ...["--out", config.out],
          ...["--step-timeout-ms", String(s.stepTimeoutMs)],
          ...["--feedback-address", feedbackAddress],
          ...["--weights-signing-key", keys.signingKey],
          ...["--weights-retention", String(s.weightsRetention)],
          ...["--weights-full-every", String(s.weightsFullEvery)],
          ...tls,
        ],
        // A restarted Optimizer continues the run this cluster was training. Not at the first
        // start: `rlaif up` starts a run of its own then, and an old run in --out must not win.
        ["--resume-unfinished"],
        { ...natsEnv(users.optimizer), ...(token ? { [CONTROL_TOKEN_ENV]: token } : {}) },
      ),
    ]);
    const services = Object.keys(supervisors).filter((k) => k !== "nats");
    const failed = Promise.race(Object.values(supervisors).map((x) => x.failed));
    failed.catch(() => undefined); // raced on by whoever follows the cluster
    return {
      natsUrl,
      addresses: {
        policy: policy.address,
        rollout: rollout.address,
        feedback: feedbackAddress,
        optimizer: optimizer.address,
      },
      metricsAddresses,
      get pids() {
        return Object.fromEntries(services.map((k) => [k, supervisors[k]?.pid ?? 0]));
      },
      supervisors,
      failed,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
