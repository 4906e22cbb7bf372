/**
 * Async against sync in separate processes: the same run (seed, steps, model, every setting but
 * `max_staleness`) through an `rlaif up` cluster — nats-server and one `rlaif serve` process per
 * service — once with max_staleness 0 (sampling and learning take turns) and once with 1 (the
 * Policy samples step k + 1 while the learner updates on step k). Why separate processes: that is
 * the production shape (the Optimizer on its own node), where overlap can only pay if the two
 * really run at once; here `taskset` keeps them off each other's core: the Policy on CPU 1, the
 * Optimizer on CPU 0, Rollout, Feedback and nats-server on `--others-cpu` (default 0: they are
 * light, and the Policy's core is the one generation needs).
 *
 * Prints one JSON line per run, over steps 2..n (step 1 pays for warm-up): seconds per step (the
 * Optimizer's own wall clock between step records), its mean optimizer_busy_fraction, each
 * process's CPU seconds per wall second (from /proc: who worked, who waited), the learning curve
 * (mean reward against trajectories consumed, every step), and with both runs a last line with
 * the ratio sync ÷ async seconds per step.
 *
 *   npx tsx bench/async.ts --steps 20 [--modes 0,1] [--others-cpu 0|1|0,1] [--no-pin] [setting flags]
 *
 * Any `rlaif up` setting flag is accepted (`--config file` reads a config file first); service
 * logs go to `<out>/bench-async-<staleness>.log`.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connectOptimizer, optimizerAccess, startRemoteRun } from "../services/cli/remote-run.js";
import { startLocalCluster } from "../services/cluster/local-cluster.js";
import type { StepMetrics } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { type RlaifConfig, SETTINGS } from "../services/core/src/config/settings.js";

const { values } = parseArgs({
  options: {
    config: { type: "string" },
    modes: { type: "string", default: "0,1" },
    "others-cpu": { type: "string", default: "0" },
    "no-pin": { type: "boolean", default: false },
    ...Object.fromEntries(
      SETTINGS.filter((s) => s.type !== "strings").map((s) => [s.flag, { type: "string" as const }]),
    ),
  },
});
const { config: file, modes, "others-cpu": othersCpu, "no-pin": noPin, ...flags } = values;

/** Exit 2 with what to fix (bad flags, a machine that cannot pin). */
function usage(message: string): never {
  process.stderr.write(`bench/async: ${message}\n`);
  process.exit(2);
}

const lags = (modes as string).split(",").map((m) => Number(m.trim()));
if (lags.length === 0 || lags.some((l) => !Number.isInteger(l) || l < 0 || l > 4))
  usage(`--modes ${modes}: give max_staleness values 0..4, comma-separated (e.g. 0,1)`);
if (!/^[01](,[01])?$/.test(othersCpu as string)) usage(`--others-cpu ${othersCpu}: give 0, 1 or 0,1`);
const pin = !noPin;
if (pin && spawnSync("taskset", ["-V"]).status !== 0)
  usage("taskset is not on PATH (util-linux); install it or pass --no-pin");
const base = loadConfig(file, { steps: "20", out: "runs/bench-async", ...flags });
if (base.run.steps < 3) usage(`--steps ${base.run.steps}: at least 3 (steps 2..n are measured)`);
const ticks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

/** CPU seconds (user + system, every thread) a process has used so far; 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticks; // utime, stime (fields 14, 15)
  } catch {
    return 0;
  }
}

/** Pin a process and every thread it has (later threads inherit it) to `cpus`. */
function taskset(pid: number, cpus: string): void {
  const r = spawnSync("taskset", ["-a", "-cp", cpus, String(pid)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`taskset -a -cp ${cpus} ${pid} failed: ${r.stderr.trim()}`);
}

const round = (x: number, d = 3) => Number(x.toFixed(d));

/** One run through a fresh cluster; what it measured over steps 2..n. */
async function measure(config: RlaifConfig) {
  const lag = config.run.maxStaleness;
  mkdirSync(config.out, { recursive: true });
  const logLines: string[] = [];
  const cluster = await startLocalCluster(config, (line) => logLines.push(line));
  try {
    const pids = { ...cluster.pids, nats: cluster.supervisors.nats?.pid ?? 0 };
    const placement: Record<string, string> = pin
      ? { policy: "1", optimizer: "0", rollout: othersCpu, feedback: othersCpu, nats: othersCpu }
      : {};
    for (const [service, cpus] of Object.entries(placement)) {
      const pid = pids[service as keyof typeof pids];
      if (pid) taskset(pid, cpus);
    }
    const optimizer = connectOptimizer(
      cluster.addresses.optimizer,
      config.services.rpcTimeoutMs,
      optimizerAccess(config),
    );
    const metrics: StepMetrics[] = [];
    let cpuFrom: Record<string, number> = {};
    try {
      const run = await startRemoteRun(optimizer, config.run);
      for await (const m of run.metrics) {
        metrics.push(m);
        if (m.step === 1)
          cpuFrom = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
      }
      await Promise.race([run.result(), cluster.failed]);
    } finally {
      optimizer.close();
    }
    const cpuTo = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
    const first = metrics[0] as StepMetrics;
    const last = metrics.at(-1) as StepMetrics;
    const wall = last.wallSeconds - first.wallSeconds;
    const measured = metrics.slice(1);
    // Busy share of the measured span: each step's share weighted by its interval.
    let busy = 0;
    for (let i = 1; i < metrics.length; i++) {
      const m = metrics[i] as StepMetrics;
      busy += m.optimizerBusyFraction * (m.wallSeconds - (metrics[i - 1] as StepMetrics).wallSeconds);
    }
    let consumed = 0;
    const curve = metrics.map((m) => {
      consumed += m.trajectories;
      return [consumed, round(m.meanReward)];
    });
    const rewards = metrics.map((m) => m.meanReward);
    const half = rewards.slice(Math.floor(rewards.length / 2));
    return {
      maxStaleness: lag,
      offPolicy: config.run.offPolicy,
      checkpoint: config.services.checkpoint,
      pinned: pin ? placement : null,
      measuredSteps: measured.length,
      secondsPerStep: round(wall / measured.length),
      optimizerBusyFraction: round(busy / wall),
      cpuPerWall: Object.fromEntries(
        Object.keys(pids).map((k) => [k, round(((cpuTo[k] ?? 0) - (cpuFrom[k] ?? 0)) / wall, 2)]),
      ),
      meanSampleStaleness: round(measured.reduce((s, m) => s + m.sampleStaleness, 0) / measured.length),
      excluded: metrics.reduce((s, m) => s + m.excluded, 0),
      firstMeanReward: round(rewards[0] ?? 0),
      meanRewardSecondHalf: round(half.reduce((a, b) => a + b, 0) / Math.max(half.length, 1)),
      lastMeanReward: round(rewards.at(-1) ?? 0),
      finalKl: round(last.kl),
      curve,
    };
  } finally {
    await cluster.close();
    writeFileSync(join(config.out, `bench-async-${lag}.log`), `${logLines.join("\n")}\n`);
  }
}

const reports = [];
for (const lag of lags) {
  const report = await measure({ ...base, run: { ...base.run, maxStaleness: lag } });
  process.stdout.write(`${JSON.stringify(report)}\n`);
  reports.push(report);
}
const sync = reports.find((r) => r.maxStaleness === 0);
const overlapped = reports.find((r) => r.maxStaleness > 0);
if (sync && overlapped) {
  process.stdout.write(
    `${JSON.stringify({
      ratio: round(sync.secondsPerStep / overlapped.secondsPerStep, 2),
      syncSecondsPerStep: sync.secondsPerStep,
      asyncSecondsPerStep: overlapped.secondsPerStep,
      syncBusy: sync.optimizerBusyFraction,
      asyncBusy: overlapped.optimizerBusyFraction,
      meanRewardSecondHalf: { sync: sync.meanRewardSecondHalf, async: overlapped.meanRewardSecondHalf },
    })}\n`,
  );
}
