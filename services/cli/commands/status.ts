/**
 * `rlaif status [--optimizer host:port] [run id]`: without a run id, every run the Optimizer
 * knows (ListRuns, newest first); with one, its state, step, last metrics and summary
 * (GetStatus). `--json` prints the answer as one JSON object (core/src/plain-json.ts).
 */
import {
  GetStatusResponseSchema,
  type OptimizerService,
  RunInfoSchema,
  RunState,
} from "../../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { Client } from "../../core/src/grpc/client.js";
import { plainJson } from "../../core/src/plain-json.js";
import type { CommandRun } from "../args.js";
import { stepLine } from "../progress.js";
import { explainRefusal, openOptimizer } from "../remote-run.js";
import { DEFAULT_OPTIMIZER_ADDRESS } from "../specs.js";
import { reportSummary } from "./report.js";

async function listRuns(optimizer: Client<typeof OptimizerService>, json: boolean): Promise<void> {
  const { runs } = await optimizer.listRuns({ pageSize: 1000 });
  if (json) {
    process.stdout.write(`${JSON.stringify({ runs: runs.map((r) => plainJson(RunInfoSchema, r)) })}\n`);
    return;
  }
  if (runs.length === 0) {
    process.stdout.write("no runs yet (start one with rlaif run)\n");
    return;
  }
  const width = Math.max(...runs.map((r) => r.runId.length));
  for (const r of runs) {
    const started = new Date(Number(r.startedUnixMs)).toISOString().replace("T", " ").slice(0, 19);
    process.stdout.write(
      `${r.runId.padEnd(width)}  ${RunState[r.state].padEnd(9)}  step ${r.step}/${r.steps}  started ${started} UTC${r.error ? `  ${r.error}` : ""}\n`,
    );
  }
}

/** What `rlaif status` does (its command line is declared in specs.ts). */
export const statusCommand: CommandRun = {
  async run({ config, flags, positionals }) {
    const { optimizer } = await openOptimizer(flags.optimizer, config, DEFAULT_OPTIMIZER_ADDRESS);
    const json = flags.json === true;
    try {
      const runId = positionals[0];
      if (runId === undefined) return await listRuns(optimizer, json);
      const s = await optimizer.getStatus({ runId });
      if (json) {
        process.stdout.write(`${JSON.stringify(plainJson(GetStatusResponseSchema, s))}\n`);
        return;
      }
      const { runs } = await optimizer.listRuns({ pageSize: 1000 });
      const steps = runs.find((r) => r.runId === s.runId)?.steps ?? s.step;
      process.stdout.write(`run ${s.runId}: ${RunState[s.state]}, step ${s.step} of ${steps}\n`);
      if (s.lastMetrics) process.stdout.write(`last ${stepLine(s.lastMetrics, steps)}\n`);
      if (s.error) process.stdout.write(`error: ${s.error}\n`);
      if (s.summary) reportSummary(s.summary, false, process.stdout);
    } catch (err) {
      throw explainRefusal(err);
    } finally {
      optimizer.close();
    }
  },
};
