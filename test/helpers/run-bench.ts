/**
 * Runs one `bench/<name>.ts` script as the README documents it (`npx tsx bench/…`), from the repo
 * root, and returns its exit status and output. Why one helper: every bench test starts its script
 * the same way, and flags given as a record become `--key value` pairs in one place.
 */
import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import { join } from "node:path";

const ROOT = join(import.meta.dirname, "..", "..");

/** `npx tsx bench/<script>` with `args` (a record becomes `--key value` pairs), killed after `timeoutMs`. */
export function runBench(
  script: string,
  args: Record<string, string> | readonly string[],
  timeoutMs: number,
): SpawnSyncReturns<string> {
  const argv = Array.isArray(args) ? [...args] : Object.entries(args).flatMap(([k, v]) => [`--${k}`, v]);
  return spawnSync(process.execPath, ["--import", "tsx", `bench/${script}`, ...argv], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: timeoutMs,
  });
}
