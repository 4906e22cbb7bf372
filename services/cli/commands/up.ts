/**
 * `rlaif up`: a local distributed cluster — nats-server plus one process per service — and a
 * training run driven through the Optimizer's gRPC API (StartRun, WatchMetrics, GetStatus),
 * exactly as a client in any language would drive it.
 */

import { startLocalCluster } from "../../cluster/local-cluster.js";
import { OptimizerService, RunState } from "../../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { runConfigFromSettings } from "../../core/src/config/run-config.js";
import { RlaifError } from "../../core/src/errors.js";
import { createClient } from "../../core/src/grpc/client.js";
import type { CommandRun } from "../args.js";
import { createProgress } from "../progress.js";
import { reportSummary } from "./report.js";
import { requireCheckpoint } from "./shared-flags.js";

/** Longest a run may take when watched by `rlaif up`. */
const WATCH_TIMEOUT_MS = 7 * 24 * 3600 * 1000;

/** What `rlaif up` does (its command line is declared in specs.ts). */
export const upCommand: CommandRun = {
  async run({ config, flags }) {
    requireCheckpoint(config.services.checkpoint);
    const progress = createProgress(config.run.steps);
    const cluster = await startLocalCluster(config, (line) => progress.log(line));
    const optimizer = createClient(OptimizerService, cluster.addresses.optimizer, {
      defaultTimeoutMs: config.services.rpcTimeoutMs,
    });
    try {
      progress.log(`rlaif up: nats ${cluster.natsUrl}; ${JSON.stringify(cluster.addresses)}`);
      const { runId } = await optimizer.startRun({ config: runConfigFromSettings(config.run) });
      for await (const { metrics } of optimizer.watchMetrics({ runId }, { timeoutMs: WATCH_TIMEOUT_MS })) {
        if (metrics) progress.step(metrics);
      }
      progress.done();
      const status = await optimizer.getStatus({ runId });
      if (status.state !== RunState.SUCCEEDED || !status.summary) {
        throw new RlaifError(`run ${runId} ended ${RunState[status.state]}: ${status.error}`);
      }
      reportSummary(status.summary, flags.json === true);
    } finally {
      optimizer.close();
      await cluster.close();
    }
  },
};
