/**
 * CPU time and resident memory of this process together with its descendants, read from /proc.
 * Why the whole tree: the embedded run may move the Policy into a worker process to use the
 * second core, and process.cpuUsage() would then miss exactly the work that matters. Exited
 * children that were waited for are in their parent's cutime/cstime; worker threads are in
 * their process's utime/stime. Off Linux (no /proc) the figures fall back to this process alone.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** CPU seconds (user + system) and RSS (MB) of a process tree. */
export interface TreeUsage {
  cpuSeconds: number;
  rssMb: number;
  /** How many processes were counted (1 = this one). */
  processes: number;
}

function sysconf(name: string, fallback: number): number {
  try {
    return Number(execFileSync("getconf", [name], { encoding: "utf8" }).trim()) || fallback;
  } catch {
    return fallback;
  }
}

let units: { tick: number; page: number } | null = null;

/** pid → [ppid, cpu ticks, rss pages] of every process readable in /proc. */
function readStats(): Map<number, [number, number, number]> {
  const out = new Map<number, [number, number, number]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // exited while we read
    }
    // fields after "(comm)": state ppid … utime(14) stime cutime cstime … rss(24)
    const f = stat
      .slice(stat.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number);
    const ticks = (f[11] as number) + (f[12] as number) + (f[13] as number) + (f[14] as number);
    out.set(Number(name), [f[1] as number, ticks, f[21] as number]);
  }
  return out;
}

/** Usage of the process tree rooted at `root` (default: this process). */
export function treeUsage(root = process.pid): TreeUsage {
  let stats: Map<number, [number, number, number]>;
  try {
    stats = readStats();
  } catch {
    const cpu = process.cpuUsage();
    return {
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      rssMb: process.memoryUsage().rss / 2 ** 20,
      processes: 1,
    };
  }
  units ??= { tick: sysconf("CLK_TCK", 100), page: sysconf("PAGESIZE", 4096) };
  const children = new Map<number, number[]>();
  for (const [pid, [ppid]] of stats) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  let ticks = 0;
  let pages = 0;
  let processes = 0;
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    const s = stats.get(pid);
    if (s === undefined) continue;
    ticks += s[1];
    pages += s[2];
    processes++;
    stack.push(...(children.get(pid) ?? []));
  }
  return { cpuSeconds: ticks / units.tick, rssMb: (pages * units.page) / 2 ** 20, processes };
}
