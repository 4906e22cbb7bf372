/**
 * `rlaif run --optimizer host:port`: a run on a cluster started by hand (`rlaif serve …`, or
 * Kubernetes), started with StartRun and watched with the same display and `--json` summary as
 * `rlaif train`. Only the run flags given are sent; the rest take the Optimizer's defaults.
 * Ctrl-C stops watching, not the run; an Optimizer that drops the connection is waited for.
 */
import type { CommandRun } from "../args.js";
import { followRun } from "../follow-run.js";
import { createProgress } from "../progress.js";
import { REJOIN_WAIT_MS, type Rejoin } from "../rejoin-run.js";
import { explicitRunConfig, openOptimizer, startRemoteRun } from "../remote-run.js";

/** What `rlaif run` does (its command line is declared in specs.ts). */
export const runCommand: CommandRun = {
  async run({ config, flags }) {
    const { optimizer, address } = await openOptimizer(flags.optimizer, config);
    const progress = createProgress();
    let runId = "";
    const detach = () => {
      progress.done();
      process.stderr.write(
        `rlaif run: stopped watching; run ${runId} goes on (rlaif status --optimizer ${address} ${runId}, rlaif cancel --optimizer ${address} ${runId})\n`,
      );
      process.exit(130);
    };
    process.once("SIGINT", detach);
    try {
      // A dropped Optimizer (a pod restarted) is waited for, and the same run followed again.
      const rejoin: Rejoin = {
        waitMs: REJOIN_WAIT_MS,
        log: (line) => progress.log(line),
        explain: async (err) => `rlaif run: the Optimizer at ${address} is unreachable (${err.message})`,
      };
      const request = {
        config: explicitRunConfig(config),
        ...(typeof flags["run-id"] === "string" ? { runId: flags["run-id"] } : {}),
        ...(typeof flags.resume === "string" ? { resumeFrom: flags.resume } : {}),
      };
      const run = await startRemoteRun(optimizer, request, rejoin);
      runId = run.runId;
      progress.log(
        `rlaif run: ${run.fromStep ? `resumed ${runId} at step ${run.fromStep} of` : `started ${runId},`} ${run.steps} steps on ${address}`,
      );
      await followRun(progress, run, flags.json === true);
    } finally {
      process.off("SIGINT", detach);
      progress.done();
      optimizer.close();
    }
  },
};
