/**
 * `rlaif train`'s embedded run (the same four services on loopback and the in-memory bus that
 * the CLI starts), measured from inside its own process so nothing else is counted:
 *
 *   node --import tsx bench/speed/train-child.ts --steps n --out dir [--checkpoint file|dir] [run flags, e.g. --prompts-per-step 1]
 *
 * Prints one JSON line: steps per second and CPU/wall over steps 2..n−1, the steady state (step 1
 * also pays for compiling and warming up, step n is the pipeline's drain; with fewer than four
 * steps, over 2..n, or over the one step), the process tree's RSS after every step, and the
 * process's peak RSS. CPU and RSS are of the process tree (proc-tree.ts).
 */
import { parseArgs } from "node:util";
import { startEmbeddedCluster } from "../../services/cluster/embedded-cluster.js";
import { loadConfig } from "../../services/core/src/config/load-config.js";
import { treeUsage } from "./proc-tree.js";

const RUN_FLAGS = ["prompts-per-step", "samples-per-prompt", "max-new-tokens"] as const;
const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "5" },
    out: { type: "string" },
    checkpoint: { type: "string" },
    ...Object.fromEntries(RUN_FLAGS.map((f) => [f, { type: "string" as const }])),
  },
});
if (!values.out) throw new Error("--out <dir> is required (the run's checkpoints and metrics go there)");
const flags = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
const config = loadConfig(undefined, flags);

interface Mark {
  step: number;
  at: number;
  cpuSeconds: number;
  processCpuSeconds: number;
  rssMb: number;
}
const mark = (step: number): Mark => {
  const cpu = process.cpuUsage();
  const tree = treeUsage();
  return {
    step,
    at: performance.now(),
    cpuSeconds: tree.cpuSeconds,
    processCpuSeconds: (cpu.user + cpu.system) / 1e6,
    rssMb: tree.rssMb,
  };
};

const cluster = await startEmbeddedCluster(config, () => {});
const marks: Mark[] = [mark(0)];
try {
  const run = await cluster.optimizer.runs.start(config.run);
  run.watchers.add((m) => {
    if (m) marks.push(mark(m.step));
  });
  if (!(await run.done)) throw new Error(`training failed: ${run.error}`);
} finally {
  await cluster.close();
}
const steps = marks.length - 1;
// Steady state: from step 1's end (start-up and the first, unoverlapped sampling behind) to step
// n−1's end. With overlap, step n's update is the drain: nothing is left to sample beside it, so
// it runs on one core whatever the pipeline does; a 50-step run pays it once, a 5-step window
// would pay it in one interval of four.
const from = marks[steps >= 2 ? 1 : 0] as Mark;
const to = marks[steps >= 4 ? steps - 1 : steps] as Mark;
const wall = (to.at - from.at) / 1000;
process.stdout.write(
  `${JSON.stringify({
    steps,
    firstMeasuredStep: from.step + 1,
    measuredSteps: to.step - from.step,
    firstStepSeconds: ((marks[1] as Mark).at - (marks[0] as Mark).at) / 1000,
    stepsPerSecond: (to.step - from.step) / wall,
    cpuPerWall: (to.cpuSeconds - from.cpuSeconds) / wall,
    processCpuPerWall: (to.processCpuSeconds - from.processCpuSeconds) / wall,
    processes: treeUsage().processes,
    rssMbAfterStep: marks.slice(1).map((m) => m.rssMb),
    peakRssMb: process.resourceUsage().maxRSS / 1024,
  })}\n`,
);
