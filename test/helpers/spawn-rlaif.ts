/**
 * Run the `rlaif` command (bin/rlaif.js) as a child process without blocking the test's own event
 * loop, so servers the test runs in-process keep answering while the command talks to them.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import type { Readable } from "node:stream";

/** bin/rlaif.js of this checkout. */
export const RLAIF_BIN = join(import.meta.dirname, "..", "..", "bin", "rlaif.js");

/** How a command ended and what it printed. */
export interface RlaifResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Start `rlaif …args` (with `env` added to this process's environment): `done` resolves when it
 * exits; `stderr()` reads what it printed so far; `child` is the process (to signal it).
 */
export function startRlaif(
  args: readonly string[],
  env: Readonly<Record<string, string>> = {},
): {
  done: Promise<RlaifResult>;
  stderr: () => string;
  child: ChildProcessByStdio<null, Readable, Readable>;
} {
  const child = spawn(process.execPath, [RLAIF_BIN, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => {
    stdout += d;
  });
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const done = once(child, "exit").then(([code]) => ({ code: code as number | null, stdout, stderr }));
  return { done, stderr: () => stderr, child };
}
