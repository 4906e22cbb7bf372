/**
 * A run on an Optimizer in another process, driven over its gRPC API (StartRun, WatchMetrics,
 * GetStatus) as any client would: used by `rlaif up` (a cluster it started) and `rlaif run` (a
 * cluster started by hand), and followed with the same display as `rlaif train`.
 */
import { OptimizerService, RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { runConfigFromSettings } from "../core/src/config/run-config.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { RlaifError } from "../core/src/errors.js";
import { type Client, createClient } from "../core/src/grpc/client.js";
import type { FollowedRun } from "./follow-run.js";

/** A client of the Optimizer's gRPC API. */
export type OptimizerClient = Client<typeof OptimizerService>;

/** Longest a run may be watched: a week (WatchMetrics is one long call with a deadline). */
const WATCH_TIMEOUT_MS = 7 * 24 * 3600 * 1000;

/** A client of the Optimizer at `address` whose unary calls time out after `rpcTimeoutMs`. */
export function connectOptimizer(address: string, rpcTimeoutMs: number): OptimizerClient {
  return createClient(OptimizerService, address, { defaultTimeoutMs: rpcTimeoutMs });
}

/** The run `runId` as a {@link FollowedRun}: its metrics from the first step, then its outcome. */
export function watchRemoteRun(
  optimizer: OptimizerClient,
  runId: string,
  steps: number,
  fromStep = 0,
): FollowedRun {
  return {
    steps,
    fromStep,
    metrics: (async function* () {
      for await (const { metrics } of optimizer.watchMetrics({ runId }, { timeoutMs: WATCH_TIMEOUT_MS })) {
        if (metrics) yield metrics;
      }
    })(),
    async result() {
      const status = await optimizer.getStatus({ runId });
      if (status.state !== RunState.SUCCEEDED || !status.summary) {
        throw new RlaifError(
          `run ${runId} ended ${RunState[status.state]}${status.error ? `: ${status.error}` : ""}`,
        );
      }
      return status.summary;
    },
  };
}

/** Start a run with `settings` (every field sent) and return it to follow. */
export async function startRemoteRun(
  optimizer: OptimizerClient,
  settings: RunSettings,
): Promise<FollowedRun> {
  const { runId } = await optimizer.startRun({ config: runConfigFromSettings(settings) });
  return watchRemoteRun(optimizer, runId, settings.steps);
}
