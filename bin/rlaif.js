#!/usr/bin/env node
// Entry point of the `rlaif` command. The project ships TypeScript sources and runs them
// through tsx's loader, so a fresh clone needs `npm ci` and nothing else (no build step).
import { readFileSync } from "node:fs";
import { register } from "tsx/esm/api";

/**
 * Started through npm (`npx rlaif …`, `npm run …`), this process is a grandchild: npm → sh -c →
 * node. A SIGTERM to npm ends npm and the shell but never reaches node, which would go on
 * holding its port. So under npm, the end of the parent or grandparent counts as a SIGTERM to
 * this process (commands shut down as they do on a real one). Run `node bin/rlaif.js` directly
 * (as the container images do) and nothing is watched.
 */
function stopWithWrapper() {
  const parent = process.ppid;
  let grandparent = 0;
  try {
    const stat = readFileSync(`/proc/${parent}/stat`, "utf8");
    grandparent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    // Not Linux (no /proc): the parent alone is watched.
  }
  const alive = (pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return err.code === "EPERM";
    }
  };
  const timer = setInterval(() => {
    if (process.ppid === parent && (grandparent <= 1 || alive(grandparent))) return;
    clearInterval(timer);
    process.kill(process.pid, "SIGTERM");
  }, 500);
  timer.unref();
}

if (process.env.npm_command || process.env.npm_lifecycle_event) stopWithWrapper();

register();
await import("../services/cli/main.ts");
