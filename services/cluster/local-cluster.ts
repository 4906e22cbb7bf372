/**
 * A local distributed cluster for `rlaif up`: a `nats-server` from PATH and one `rlaif serve`
 * process per service, each on a free port, each supervised (supervisor.ts): a process that
 * dies is started again on the same port (the others were given its address), nats-server on
 * the same store, and the Optimizer with `--resume-unfinished`, so it picks its run up from the
 * last checkpoint. `close()` stops the services (SIGTERM: each drains, SIGKILL after the
 * Kubernetes default grace of 30 s) from the Optimizer down, then NATS; a failed start tears
 * down what was started.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNatsServer } from "../core/src/bus/nats-server.js";
import type { RlaifConfig } from "../core/src/config/settings.js";
import { RlaifError } from "../core/src/errors.js";
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

/** Start NATS and the four services (three when the feedback service is external). */
export async function startLocalCluster(
  config: RlaifConfig,
  log: (line: string) => void,
  opts: LocalClusterOptions = {},
): Promise<LocalCluster> {
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
    })();
    return closing;
  };
  opts.signal?.addEventListener("abort", () => void close(), { once: true });

  let natsPort: number | undefined;
  const first = await supervise("nats", {
    name: "nats-server",
    start: async () => {
      const nats = await startNatsServer({ storeDir, ...(natsPort ? { port: natsPort } : {}) });
      natsPort = Number(new URL(nats.url).port);
      return { ...guardedInstance(nats.pid, nats.exited, () => void nats.stop()), url: nats.url };
    },
  }).catch(async (err: unknown) => {
    await close();
    throw err;
  });
  const natsUrl = first.url;

  /** A service, restarted on the port of its first start; `restartArgs` go to restarts only. */
  const service = (name: string, args: string[], restartArgs: string[] = []) => {
    let port = 0;
    return supervise<ServiceInstance>(name, {
      name,
      start: async (restart) => {
        const extra = restart > 0 ? restartArgs : [];
        const s = await startServiceProcess(name, port, [...args, ...extra], log, stopping.signal);
        port = s.port;
        return s;
      },
    });
  };
  const s = config.services;
  // Each service gets the flags its own `rlaif serve <service>` takes.
  const natsFlags = ["--nats", natsUrl];
  const model = ["--checkpoint", s.checkpoint, "--backend", s.backend];
  try {
    const [feedback, policy] = await Promise.all([
      s.feedbackAddress ? null : service("feedback", []),
      service("policy", [
        ...natsFlags,
        ...model,
        ...["--policy-batch-rows", String(s.policyBatchRows)],
        ...["--policy-queue-rows", String(s.policyQueueRows)],
      ]),
    ]);
    const feedbackAddress = s.feedbackAddress || (feedback as ServiceInstance).address;
    const [rollout, optimizer] = await Promise.all([
      service("rollout", [
        ...natsFlags,
        ...["--rpc-timeout-ms", String(s.rpcTimeoutMs)],
        ...["--rollout-concurrency", String(s.rolloutConcurrency)],
        ...["--policy-address", policy.address],
        ...["--feedback-address", feedbackAddress],
      ]),
      service(
        "optimizer",
        [
          ...natsFlags,
          ...model,
          ...["--out", config.out],
          ...["--step-timeout-ms", String(s.stepTimeoutMs)],
          ...["--feedback-address", feedbackAddress],
        ],
        // A restarted Optimizer continues the run this cluster was training. Not at the first
        // start: `rlaif up` starts a run of its own then, and an old run in --out must not win.
        ["--resume-unfinished"],
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
