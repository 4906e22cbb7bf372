/**
 * `rlaif up`: a local distributed cluster — nats-server plus one process per service — and a
 * training run driven through the Optimizer's gRPC API (StartRun, WatchMetrics, GetStatus),
 * exactly as a client in any language would drive it, and as `rlaif run` drives a cluster
 * started by hand.
 */
import { startLocalCluster } from "../../cluster/local-cluster.js";
import type { CommandRun } from "../args.js";
import { followRun } from "../follow-run.js";
import { checkFeedback } from "../preflight.js";
import { createProgress } from "../progress.js";
import { connectOptimizer, optimizerAccess, startRemoteRun } from "../remote-run.js";
import { requireModel } from "./shared-flags.js";

/** What `rlaif up` does (its command line is declared in specs.ts). */
export const upCommand: CommandRun = {
  async run({ config, flags }) {
    requireModel(config);
    const access = optimizerAccess(config);
    if (config.services.feedbackAddress)
      await checkFeedback(
        config.services.feedbackAddress,
        "--feedback-address",
        undefined,
        access.credentials,
      );
    const progress = createProgress();
    const cluster = await startLocalCluster(config, (line) => progress.log(line));
    const optimizer = connectOptimizer(cluster.addresses.optimizer, config.services.rpcTimeoutMs, access);
    try {
      progress.log(`rlaif up: nats ${cluster.natsUrl}; ${JSON.stringify(cluster.addresses)}`);
      const run = await startRemoteRun(optimizer, config.run);
      await followRun(progress, run, flags.json === true);
    } finally {
      progress.done();
      optimizer.close();
      await cluster.close();
    }
  },
};
