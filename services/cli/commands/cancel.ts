/**
 * `rlaif cancel --optimizer host:port [run id]`: CancelRun on a run (the most recent without an
 * id). The run stops before its next step and keeps its last completed step's checkpoint, so
 * `rlaif run --resume <run id>` continues it. Cancelling a run that has ended changes nothing.
 */
import { CancelRunResponseSchema, RunState } from "../../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { plainJson } from "../../core/src/plain-json.js";
import type { CommandRun } from "../args.js";
import { explainRefusal, openOptimizer } from "../remote-run.js";

/** What `rlaif cancel` does (its command line is declared in specs.ts). */
export const cancelCommand: CommandRun = {
  async run({ config, flags, positionals }) {
    const { optimizer, address } = await openOptimizer(flags.optimizer, config);
    try {
      // Name the run first, so the answer says which run "the most recent" was.
      const { runId } = await optimizer.getStatus({ runId: positionals[0] ?? "" });
      const res = await optimizer.cancelRun({ runId });
      if (flags.json === true) {
        process.stdout.write(`${JSON.stringify({ runId, ...plainJson(CancelRunResponseSchema, res) })}\n`);
        return;
      }
      const state = RunState[res.state];
      process.stdout.write(
        res.state === RunState.CANCELLED
          ? `run ${runId}: CANCELLED at step ${res.step}; continue it with rlaif run --optimizer ${address} --resume ${runId}\n`
          : `run ${runId} had already ended: ${state} at step ${res.step}\n`,
      );
    } catch (err) {
      throw explainRefusal(err);
    } finally {
      optimizer.close();
    }
  },
};
