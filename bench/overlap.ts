/**
 * Does sampling overlap learning? Runs `rlaif train`'s embedded cluster with the given settings
 * and prints, over steps 2..n (step 1 also pays for warm-up): steps per second, the process's CPU
 * per wall second, and how busy each thread's event loop was — the main thread (Optimizer,
 * Rollout, Feedback) and the Policy's thread. Why the busy shares: on a shared machine cpu/wall
 * says how much CPU the run got; the sum of the two busy shares says how much it asked for (1 =
 * the threads take turns, 2 = both work all the time), which is what a free second core would
 * turn into speed. The learner's own thread (`services.learnerIn: thread`) is counted too. Also the mean staleness of the samples and the reward of the last step.
 *
 *   npx tsx bench/overlap.ts --steps 10 [--max-staleness 1 --off-policy ppo-clip] [--policy-in main]
 *
 * Any `rlaif train` setting flag is accepted; `--config file` reads a config file first.
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import type { RunSummary } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { SETTINGS } from "../services/core/src/config/settings.js";

const { values } = parseArgs({
  options: {
    config: { type: "string" },
    ...Object.fromEntries(
      SETTINGS.filter((s) => s.type !== "strings").map((s) => [s.flag, { type: "string" as const }]),
    ),
  },
});
const { config: file, ...flags } = values;
const config = loadConfig(file, { steps: "10", out: "runs/bench-overlap", ...flags });

const cluster = await startEmbeddedCluster(config, () => {});
const thread = cluster.policyThread;
const mark = () => ({
  at: performance.now(),
  cpu: process.cpuUsage(),
  main: performance.eventLoopUtilization(),
  policy: thread?.eventLoopUtilization(),
});
let from = mark();
const staleness: number[] = [];
let summary: RunSummary | null = null;
let wall = 0;
let cpu = { user: 0, system: 0 };
let mainBusy = 0;
let policyBusy = 0;
let learnerBusy: number | null = null;
try {
  const run = await cluster.optimizer.runs.start(config.run);
  let learnerFrom = run.learner.eventLoopUtilization?.();
  run.watchers.add((m) => {
    if (!m) return;
    if (m.step === 1) {
      from = mark();
      learnerFrom = run.learner.eventLoopUtilization?.();
    } else staleness.push(m.sampleStaleness);
  });
  summary = await run.done;
  if (!summary) throw new Error(`training failed: ${run.error}`);
  // Read before close: a finished thread reports no utilisation.
  wall = (performance.now() - from.at) / 1000;
  cpu = process.cpuUsage(from.cpu);
  mainBusy = performance.eventLoopUtilization(from.main).active / 1000 / wall;
  policyBusy = from.policy && thread ? thread.eventLoopUtilization(from.policy).active / 1000 / wall : 0;
  const learnerUse = learnerFrom && run.learner.eventLoopUtilization?.(learnerFrom);
  learnerBusy = learnerUse ? learnerUse.active / 1000 / wall : null;
} finally {
  await cluster.close();
}
if (!summary) throw new Error("training did not finish");
const steps = summary.steps - 1;
const f = (x: number) => x.toFixed(2);
process.stdout.write(
  `${JSON.stringify({
    policyIn: config.services.policyIn,
    learnerIn: config.services.learnerIn,
    maxStaleness: config.run.maxStaleness,
    offPolicy: config.run.offPolicy,
    measuredSteps: steps,
    stepsPerSecond: Number(f(steps / wall)),
    secondsPerStep: Number(f(wall / steps)),
    cpuPerWall: Number(f((cpu.user + cpu.system) / 1e6 / wall)),
    mainBusy: Number(f(mainBusy)),
    policyThreadBusy: thread ? Number(f(policyBusy)) : null,
    learnerThreadBusy: learnerBusy === null ? null : Number(f(learnerBusy)),
    busySum: Number(f(mainBusy + policyBusy + (learnerBusy ?? 0))),
    meanSampleStaleness: Number(f(staleness.reduce((a, b) => a + b, 0) / Math.max(staleness.length, 1))),
    lastMeanReward: Number(summary.lastMeanReward.toFixed(3)),
  })}\n`,
);
