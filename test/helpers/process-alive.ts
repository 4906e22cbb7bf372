/**
 * Whether a process still runs, for tests that check nothing outlives its parent. A zombie (an
 * exited child nobody reaped yet, as under a container's init) counts as gone: it holds no port,
 * memory or file.
 */
import { readFileSync } from "node:fs";

/** True while `pid` exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Resolves true once every pid has gone, false if some still run after `ms`. */
export async function allGone(pids: readonly number[], ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (pids.some(processAlive)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}
