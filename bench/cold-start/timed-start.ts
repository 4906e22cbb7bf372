/**
 * One timed cold start of `rlaif serve <service>` for bench/cold-start.ts: spawn the process, read
 * the phases it logs itself (services/core/src/ops/start-phases.ts), probe grpc.health.v1 Check
 * every ~10 ms from the spawn on (as a kubelet's gRPC readiness probe would, a new connection per
 * probe) until it answers SERVING, then send the service's first request and time its answer;
 * then stop the process with SIGTERM (it drains) and wait for it to exit.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { REPO_ROOT } from "../../services/core/src/config/settings.js";
import { checkHealth } from "../../services/core/src/grpc/client.js";
import {
  epochNowMs,
  parseStartPhase,
  START_PHASES,
  type StartPhase,
} from "../../services/core/src/ops/start-phases.js";

/** Milestones of one start, in ms since the spawn; a phase the service does not have is absent. */
export type Milestones = Partial<Record<Milestone, number>>;

/**
 * Every milestone in order: `process` (Node's time origin: exec done), the phases the service logs,
 * `health` (the first probe answered SERVING) and `answered` (the first request's answer arrived).
 */
export const MILESTONES = ["process", ...START_PHASES, "health", "answered"] as const;

/** One of {@link MILESTONES}. */
export type Milestone = (typeof MILESTONES)[number];

/** What to start and what to ask it first. */
export interface StartSpec {
  service: string;
  /** Flags after `serve <service>` (the bench adds `--port`). */
  args: readonly string[];
  port: number;
  /** The service's first useful request against `address`; resolves when it is answered. */
  firstRequest: (address: string) => Promise<void>;
  /** Longest the whole start may take before it counts as failed. */
  timeoutMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Start the service once and return its milestones; throws with the process's log on failure. */
export async function timedStart(spec: StartSpec): Promise<Milestones> {
  const address = `127.0.0.1:${spec.port}`;
  const argv = [`${REPO_ROOT}bin/rlaif.js`, "serve", spec.service, "--port", String(spec.port), ...spec.args];
  // Not under npm: bin/rlaif.js then watches no wrapper processes.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_")));
  const t0 = epochNowMs();
  const child = spawn(process.execPath, argv, { stdio: ["ignore", "ignore", "pipe"], env });
  const exited = once(child, "exit");
  const marks: Milestones = {};
  const log: string[] = [];
  createInterface({ input: child.stderr }).on("line", (line) => {
    log.push(line);
    const mark = parseStartPhase(line);
    if (!mark || mark.service !== spec.service) return;
    marks[mark.phase as StartPhase] = mark.atEpochMs - t0;
    // The line says how long after its process's start it came: the start itself follows.
    const since = /\((\d+(?:\.\d+)?) ms since process start\)/.exec(line);
    if (since && marks.process === undefined) marks.process = mark.atEpochMs - Number(since[1]) - t0;
  });
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  const fail = (why: string) => new Error(`${spec.service}: ${why}\n${log.join("\n")}`);
  let code: unknown;
  try {
    for (;;) {
      if (dead) throw fail("exited before it served");
      if (epochNowMs() - t0 > spec.timeoutMs) throw fail(`not SERVING within ${spec.timeoutMs} ms`);
      const status = await checkHealth(address, "", 1000).catch(() => "DOWN");
      if (status === "SERVING") break;
      await sleep(10);
    }
    marks.health = epochNowMs() - t0;
    await spec.firstRequest(address);
    marks.answered = epochNowMs() - t0;
  } finally {
    if (!dead) child.kill("SIGTERM");
    [code] = await exited;
  }
  // Measured, but it did not drain cleanly: that is a bug worth seeing, not a figure.
  if (code !== 0) throw fail(`exited ${String(code)} on SIGTERM`);
  return marks;
}
