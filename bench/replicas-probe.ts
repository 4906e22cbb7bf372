/**
 * What the replica benchmark (bench/replicas.ts) reads between two instants: each process's CPU
 * seconds from /proc (Linux), the nats-server's message and byte counters from its monitoring
 * endpoint (`/varz`), and each Rollout worker's counters (RolloutService.GetStatus). Why from
 * outside the processes: the benchmark must measure the services as they run in production,
 * unmodified, and say how much CPU each took, so the CPU left for generation is known.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

/** Clock ticks per second of /proc's CPU times (usually 100). */
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** User + system CPU seconds process `pid` has used so far (its threads included); 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the ")" that ends the command name: state is [0], utime [11], stime [12].
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Resident memory of process `pid` in MB (VmRSS); 0 once it is gone. */
export function rssMb(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return Math.round(Number(kb ?? 0) / 1024);
  } catch {
    return 0;
  }
}

/** Pin every thread of `pid` to `cpus` (taskset's list, e.g. "0"); threads it starts later inherit it. */
export function pin(pid: number, cpus: string): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

/**
 * Set the nice value of `pid`'s autogroup (Linux; below 0 needs root). Why: with
 * `kernel.sched_autogroup_enabled` the scheduler first shares the CPU between sessions, and each
 * `rlaif serve` child runs in a session of its own (it is started detached), so a process's own
 * nice value weighs only inside its session and cannot keep other sessions' work off the cores
 * being measured; the autogroup's nice value can.
 */
export function setAutogroupNice(pid: number, nice: number): void {
  writeFileSync(`/proc/${pid}/autogroup`, String(nice));
}

/** The nats-server's totals since it started. */
export interface NatsCounters {
  inMsgs: number;
  outMsgs: number;
  inBytes: number;
  outBytes: number;
}

/** Read `/varz` of the nats-server whose monitoring endpoint is on `port` (loopback). */
export async function natsCounters(port: number): Promise<NatsCounters> {
  const res = await fetch(`http://127.0.0.1:${port}/varz`);
  const v = (await res.json()) as Record<string, number>;
  return {
    inMsgs: v.in_msgs ?? 0,
    outMsgs: v.out_msgs ?? 0,
    inBytes: v.in_bytes ?? 0,
    outBytes: v.out_bytes ?? 0,
  };
}

/** One instant: what arrived so far, every process's CPU, the server's counters, each worker's output. */
export interface Snapshot {
  at: number;
  trajectories: number;
  tokens: number;
  /** CPU seconds by process name. */
  cpu: Record<string, number>;
  nats: NatsCounters;
  /** Trajectories each Rollout worker has published, by replica name. */
  published: Record<string, number>;
  /** Prompt jobs each Rollout worker has completed, by replica name. */
  jobs: Record<string, number>;
}

/** Figures of the interval between two snapshots. */
export interface Interval {
  seconds: number;
  trajectoriesPerSecond: number;
  tokensPerSecond: number;
  /** CPU seconds per wall second of each process. */
  cpuPerWall: Record<string, number>;
  /** Trajectories per second each replica's Rollout worker published. */
  perReplica: Record<string, number>;
  /** Prompt jobs pulled and completed per second, all workers. */
  jobsPerSecond: number;
  /** Messages and bytes through the nats-server (in + out) per trajectory. */
  natsMsgsPerTrajectory: number;
  natsBytesPerTrajectory: number;
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits));

/** The figures between snapshots `a` and `b`. */
export function interval(a: Snapshot, b: Snapshot): Interval {
  const seconds = (b.at - a.at) / 1000;
  const trajs = b.trajectories - a.trajectories;
  const per = (x: number) => (trajs > 0 ? x / trajs : 0);
  const delta = (from: Record<string, number>, to: Record<string, number>) =>
    Object.fromEntries(Object.keys(to).map((k) => [k, round((to[k] ?? 0) - (from[k] ?? 0)) / seconds]));
  const jobs = Object.values(delta(a.jobs, b.jobs)).reduce((s, x) => s + x, 0);
  return {
    seconds: round(seconds, 1),
    trajectoriesPerSecond: round(trajs / seconds),
    tokensPerSecond: round((b.tokens - a.tokens) / seconds, 1),
    cpuPerWall: Object.fromEntries(Object.entries(delta(a.cpu, b.cpu)).map(([k, v]) => [k, round(v)])),
    perReplica: Object.fromEntries(
      Object.entries(delta(a.published, b.published)).map(([k, v]) => [k, round(v)]),
    ),
    jobsPerSecond: round(jobs),
    natsMsgsPerTrajectory: round(per(b.nats.inMsgs + b.nats.outMsgs - a.nats.inMsgs - a.nats.outMsgs)),
    natsBytesPerTrajectory: Math.round(
      per(b.nats.inBytes + b.nats.outBytes - a.nats.inBytes - a.nats.outBytes),
    ),
  };
}
