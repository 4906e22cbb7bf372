/**
 * `rlaif up`: a local distributed cluster — nats-server plus one process per service, each
 * supervised (restarted on its port when it dies) — and a training run driven through the
 * Optimizer's gRPC API (StartRun, WatchMetrics, GetStatus), exactly as a client in any language
 * would drive it, and as `rlaif run` drives a cluster started by hand. When the Optimizer dies
 * the run goes on: it is restarted, resumes the run from its last checkpoint, and this command
 * follows the same run id to its end. SIGINT/SIGTERM stop every process it started and exit
 * 130/143.
 */
import { type LocalCluster, startLocalCluster } from "../../cluster/local-cluster.js";
import { describeExit } from "../../cluster/supervisor.js";
import { checkOneFeedback } from "../../core/src/config/scorer-flags.js";
import { RlaifError, StoppedBySignalError } from "../../core/src/errors.js";
import type { CommandRun } from "../args.js";
import { followRun } from "../follow-run.js";
import { checkFeedback } from "../preflight.js";
import { createProgress } from "../progress.js";
import { REJOIN_WAIT_MS, type Rejoin } from "../rejoin-run.js";
import { connectOptimizer, optimizerAccess, startRemoteRun } from "../remote-run.js";
import { requireModel } from "./shared-flags.js";

/**
 * How `rlaif up` rejoins its run: the stream dropped because the Optimizer process died (its
 * supervisor saw it exit and restarts it) or, with the process still alive, because it is
 * unreachable; either way it waits, unless the supervisor gives up.
 */
export function clusterRejoin(
  cluster: LocalCluster,
  log: (line: string) => void,
  signal?: AbortSignal,
): Rejoin {
  return {
    waitMs: REJOIN_WAIT_MS,
    log,
    abandoned: cluster.failed,
    ...(signal ? { signal } : {}),
    async explain(err) {
      const optimizer = cluster.supervisors.optimizer;
      const exit = await optimizer?.downSince(3000);
      if (exit)
        return `rlaif up: the Optimizer (pid ${exit.pid}) died (${describeExit(exit.status)}); restarting`;
      return `rlaif up: the Optimizer (pid ${optimizer?.pid}) is unreachable (${err.message})`;
    },
  };
}

/** SIGINT/SIGTERM as an abort (the first one; later ones are absorbed while everything stops). */
function stopSignals(): { signal: AbortSignal; received: () => "SIGINT" | "SIGTERM" | null; off(): void } {
  const stop = new AbortController();
  let received: "SIGINT" | "SIGTERM" | null = null;
  const on = (sig: "SIGINT" | "SIGTERM") => () => {
    received ??= sig;
    stop.abort();
  };
  const onInt = on("SIGINT");
  const onTerm = on("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  return {
    signal: stop.signal,
    received: () => received,
    off() {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
    },
  };
}

/** What `rlaif up` does (its command line is declared in specs.ts). */
export const upCommand: CommandRun = {
  async run({ config, flags }) {
    requireModel(config);
    const access = optimizerAccess(config);
    // A conflict in the flags is told before any peer is dialled.
    checkOneFeedback(config.services);
    if (config.services.feedbackAddress)
      await checkFeedback(
        config.services.feedbackAddress,
        "--feedback-address",
        undefined,
        access.credentials,
      );
    const progress = createProgress();
    const log = (line: string) => progress.log(line);
    const signals = stopSignals();
    const stopped = new Promise<never>((_, reject) => {
      const stop = () => reject(new RlaifError(`stopped by ${signals.received()}`));
      signals.signal.addEventListener("abort", stop, { once: true });
    });
    stopped.catch(() => undefined);
    let cluster: LocalCluster | undefined;
    try {
      cluster = await startLocalCluster(config, log, { signal: signals.signal });
      const pids = Object.fromEntries(Object.entries(cluster.supervisors).map(([k, s]) => [k, s.pid]));
      log(
        `rlaif up: nats ${cluster.natsUrl}; ${JSON.stringify(cluster.addresses)}; pids ${JSON.stringify(pids)}`,
      );
      log(`rlaif up: metrics (Prometheus targets) ${JSON.stringify(cluster.metricsAddresses)}`);
      const every = config.run.checkpointEvery;
      const first = every > 0 ? Math.min(every, config.run.steps) : config.run.steps;
      log(
        `rlaif up: checkpoints every ${every || config.run.steps} steps (--checkpoint-every): an Optimizer that dies is restarted and resumes the run from the last one (none before step ${first})`,
      );
      const optimizer = connectOptimizer(cluster.addresses.optimizer, config.services.rpcTimeoutMs, access);
      try {
        const run = await startRemoteRun(optimizer, config.run, clusterRejoin(cluster, log, signals.signal));
        await Promise.race([followRun(progress, run, flags.json === true), cluster.failed, stopped]);
      } finally {
        optimizer.close();
      }
    } catch (err) {
      const signal = signals.received();
      if (signal) throw new StoppedBySignalError(signal, `${signal}: stopped every process it started`);
      throw err;
    } finally {
      progress.done();
      await cluster?.close();
      signals.off();
    }
  },
};
