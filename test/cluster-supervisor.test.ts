/**
 * The restart rules of `rlaif up`'s supervisor, on real (tiny) processes: a killed process is
 * started again and its exit logged, one that keeps dying is given up on with an error naming
 * it, stop() calls off a pending restart, and a child's guard stops it when its parent is
 * killed with SIGKILL.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { childInstance } from "../services/cluster/service-process.js";
import { type ProcessInstance, type RestartPolicy, Supervisor } from "../services/cluster/supervisor.js";
import { ServiceFailedError } from "../services/core/src/errors.js";
import { allGone, processAlive } from "./helpers/process-alive.js";

/** Waits of a few ms, so the rules run through in a moment. */
const FAST: Partial<RestartPolicy> = { firstDelayMs: 5, maxDelayMs: 20, stableMs: 60_000 };

/** A supervised `sleep 1000` (script "") or `sh -c script`; `starts` counts the starts. */
async function supervise(script: string, policy: Partial<RestartPolicy>) {
  const [command, args]: [string, string[]] = script ? ["sh", ["-c", script]] : ["sleep", ["1000"]];
  const lines: string[] = [];
  let starts = 0;
  const sup = await Supervisor.start<ProcessInstance>({
    name: "worker",
    start: async () => {
      starts++;
      return childInstance(spawn(command, args, { stdio: "ignore", detached: true }));
    },
    log: (line) => lines.push(line),
    policy,
  });
  return { sup, lines, starts: () => starts };
}

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(ok(), what).toBe(true);
}

describe("cluster supervisor", () => {
  it("supervisor - a process killed with SIGKILL is logged with its signal and started again", async () => {
    const { sup, lines, starts } = await supervise("", FAST);
    try {
      const first = sup.pid;
      process.kill(first, "SIGKILL");
      await until(() => starts() === 2 && sup.pid !== first, "a second start");
      expect(lines[0]).toMatch(
        new RegExp(
          `^worker \\(pid ${first}\\) exited unexpectedly \\(signal SIGKILL\\) after [\\d.]+ s; restarting in 0\\.0 s$`,
        ),
      );
      await until(() => lines.length >= 2, "the restart logged");
      expect(lines[1]).toBe(`worker restarted (pid ${sup.pid}, restart 1)`);
      expect((await sup.downSince(0))?.pid ?? null).toBeNull();
      expect(processAlive(sup.pid)).toBe(true);
    } finally {
      expect(await sup.stop(5000)).toEqual({ code: null, signal: "SIGTERM" });
    }
    expect(processAlive(sup.pid)).toBe(false);
  });

  it("supervisor - a process that keeps dying is given up on with ServiceFailedError naming it", async () => {
    const { sup, lines, starts } = await supervise("exit 3", { ...FAST, maxRestarts: 3 });
    const err = await sup.failed.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceFailedError);
    expect((err as ServiceFailedError).service).toBe("worker");
    expect((err as Error).message).toMatch(
      /^worker keeps exiting: 3 restarts within 60 s \(last: exit code 3\); giving up/,
    );
    expect(starts()).toBe(4);
    expect(lines.filter((l) => l.includes("exited unexpectedly (exit code 3)"))).toHaveLength(4);
    expect(await sup.stop(1000)).toBeNull();
  });

  it("supervisor - the wait doubles per restart up to its cap, and the cap ends the restarts", async () => {
    const { sup, lines, starts } = await supervise("exit 1", {
      firstDelayMs: 100,
      maxDelayMs: 400,
      maxRestarts: 4,
      stableMs: 60_000,
    });
    await sup.failed.catch(() => undefined);
    const waits = lines.flatMap((l) => /restarting in ([\d.]+) s$/.exec(l)?.[1] ?? []);
    expect(waits).toEqual(["0.1", "0.2", "0.4", "0.4"]);
    expect(starts()).toBe(5);
    expect(lines.at(-1)).toBe("worker: giving up after 4 restarts within 60 s");
  });

  it("supervisor - stop() during the back-off calls the restart off", async () => {
    const { sup, lines, starts } = await supervise("", { firstDelayMs: 60_000 });
    process.kill(sup.pid, "SIGKILL");
    expect(await sup.downSince(5000)).toMatchObject({ status: { code: null, signal: "SIGKILL" } });
    expect(await sup.stop(1000)).toBeNull();
    expect(starts()).toBe(1);
    expect(lines.some((l) => l.includes("restarted"))).toBe(false);
  });

  it("service process - the guard stops a child whose parent was killed with SIGKILL", async () => {
    const parent = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "helpers", "guarded-parent.ts")],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const [line] = (await once(createInterface({ input: parent.stdout }), "line")) as [string];
    const child = Number(line);
    expect(processAlive(child)).toBe(true);
    parent.kill("SIGKILL");
    await once(parent, "exit");
    expect(await allGone([child], 20_000), `pid ${child} outlived its parent`).toBe(true);
  });
});
