/**
 * `--resume-unfinished`: which run a starting Optimizer resumes (only the newest, only when it
 * did not end), and that a crashed run resumed that way ends once, with its ended.json, while a
 * cancelled run is left alone. A run that died before its first step checkpoint is started over
 * from step 0 (the same weights as an uninterrupted run at the end), unless the checkpoint it
 * started from changed.
 */
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { describe, expect, it } from "vitest";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { RlaifConfig } from "../services/core/src/config/settings.js";
import {
  findUnfinishedRun,
  markRunEnded,
  RUN_END_FILE,
  resumeUnfinishedRun,
} from "../services/optimizer/auto-resume.js";
import { differingTensors, runAndCrash, runToEnd, tensorBytes } from "./helpers/resume-runs.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

/** A run directory `name` under `out` whose config.json (and metrics.jsonl) were last written at `at` s. */
function fakeRun(out: string, name: string, at: number, metricsAt?: number): string {
  const dir = join(out, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), "{}\n");
  utimesSync(join(dir, "config.json"), at, at);
  if (metricsAt !== undefined) {
    writeFileSync(join(dir, "metrics.jsonl"), "");
    utimesSync(join(dir, "metrics.jsonl"), metricsAt, metricsAt);
  }
  return dir;
}

function endOf(dir: string): { state: string; step: number } {
  return JSON.parse(readFileSync(join(dir, RUN_END_FILE), "utf8"));
}

/** Resume whatever `config.out` holds on a fresh embedded cluster; its log lines and outcome. */
async function resumeInFreshCluster(config: RlaifConfig, start: string) {
  const cluster = await startEmbeddedCluster(config);
  const lines: string[] = [];
  try {
    const opts = { outDir: config.out, checkpoint: start, log: (l: string) => lines.push(l) };
    const run = await resumeUnfinishedRun(cluster.optimizer.runs, opts);
    const summary = run ? await run.done : null;
    return { run, summary, lines };
  } finally {
    await cluster.close();
  }
}

describe("optimizer auto-resume", () => {
  it("auto-resume - the newest run directory is the candidate, and only while it has not ended", async () => {
    const out = mkdtempSync(join(tmpdir(), "rlaif-auto-"));
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    expect(await findUnfinishedRun(join(out, "missing"), log)).toBeNull();
    expect(lines.at(-1)).toMatch(/no run under .*missing$/);
    const a = fakeRun(out, "a", 1000);
    const b = fakeRun(out, "b", 2000);
    expect(await findUnfinishedRun(out, log)).toBe(b);
    // metrics.jsonl counts as activity: "a" stepped last.
    fakeRun(out, "a", 1000, 3000);
    expect(await findUnfinishedRun(out, log)).toBe(a);
    markRunEnded(a, { state: "CANCELLED", step: 2, error: "" });
    // The newest has ended: an older unfinished run ("b") is not picked instead.
    expect(await findUnfinishedRun(out, log)).toBeNull();
    expect(lines.at(-1)).toBe(
      `optimizer: --resume-unfinished: the newest run ${a} has ended (ended.json); nothing to resume`,
    );
    // Continued past its end (`--resume --steps more`): steps newer than the end marker.
    utimesSync(join(a, RUN_END_FILE), 2500, 2500);
    expect(await findUnfinishedRun(out, log)).toBe(a);
    const c = fakeRun(out, "c", 4000);
    writeFileSync(join(c, "final.safetensors"), "");
    expect(await findUnfinishedRun(out, log)).toBeNull();
    expect(lines.at(-1)).toMatch(/has ended \(final\.safetensors\)/);
  });

  it("auto-resume - a crashed run is resumed by a fresh Optimizer, keeps its id and ends once", async () => {
    const start = await writeTinyCheckpoint(9);
    const config = tinyRunConfig(start, { steps: 4, checkpointEvery: 1, seed: 4 });
    const dir = await runAndCrash(config, 2);
    expect(() => endOf(dir), "a crashed run has no ended.json").toThrow();
    const { run, summary, lines } = await resumeInFreshCluster(config, start);
    expect(run?.runId).toBe(basename(dir));
    expect(run?.resumedFromStep).toBe(2);
    expect(lines).toContain(
      `optimizer: --resume-unfinished: run ${basename(dir)} did not finish; resuming it at step 2`,
    );
    expect(summary?.steps).toBe(4);
    expect(summary?.trajectories).toBe(4 * 4 * 2);
    const steps = readFileSync(join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => Number(JSON.parse(l).step));
    expect(steps).toEqual([1, 2, 3, 4]);
    expect(endOf(dir)).toMatchObject({ state: "SUCCEEDED", step: 4 });
    // Ended now: the next start resumes nothing.
    expect((await resumeInFreshCluster(config, start)).run).toBeNull();
  }, 120_000);

  it("auto-resume - a run cancelled with CancelRun is not resumed", async () => {
    const start = await writeTinyCheckpoint(9);
    const cancelled = tinyRunConfig(start, { steps: 4, checkpointEvery: 1 });
    const cluster = await startEmbeddedCluster(cancelled);
    try {
      const run = await cluster.optimizer.runs.start(cancelled.run);
      run.watchers.add((m) => {
        if (m && Number(m.step) === 1) void cluster.optimizer.runs.cancel(run.runId);
      });
      await run.done;
      expect(run.state).toBe(RunState.CANCELLED);
      expect(endOf(run.dir).state).toBe("CANCELLED");
    } finally {
      await cluster.close();
    }
    expect((await resumeInFreshCluster(cancelled, start)).run).toBeNull();
  }, 120_000);

  it("auto-resume - a run that died before its first checkpoint restarts from step 0 under its id and seed and ends with the weights of an uninterrupted run", async () => {
    const start = await writeTinyCheckpoint(9);
    const early = tinyRunConfig(start, { steps: 4, checkpointEvery: 10, seed: 6 });
    const dir = await runAndCrash(early, 1);
    expect(readdirSync(dir).filter((n) => n.startsWith("step-"))).toEqual([]);
    const { run, summary, lines } = await resumeInFreshCluster(early, start);
    expect(run?.runId).toBe(basename(dir));
    expect(run?.dir).toBe(dir);
    expect(run?.resumedFromStep).toBe(0);
    expect(run?.settings.seed).toBe(6);
    expect(lines).toContain(
      `optimizer: --resume-unfinished: run ${basename(dir)} did not finish and wrote no step checkpoint; restarting it from step 0 (seed 6)`,
    );
    expect(summary?.steps).toBe(4);
    expect(summary?.trajectories).toBe(4 * 4 * 2);
    const steps = readFileSync(join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => Number(JSON.parse(l).step));
    expect(steps, "the dead attempt's step 1 line is not kept twice").toEqual([1, 2, 3, 4]);
    expect(endOf(dir)).toMatchObject({ state: "SUCCEEDED", step: 4 });

    const uninterrupted = await runToEnd(early);
    const restarted = await tensorBytes(join(dir, "final.safetensors"));
    expect(restarted.size).toBeGreaterThan(0);
    expect(differingTensors(restarted, await tensorBytes(join(uninterrupted, "final.safetensors")))).toEqual(
      [],
    );
  }, 180_000);

  it("auto-resume - a run without a checkpoint is not restarted when its starting checkpoint changed", async () => {
    const start = await writeTinyCheckpoint(9);
    const early = tinyRunConfig(start, { steps: 4, checkpointEvery: 10 });
    const dir = await runAndCrash(early, 1);
    const recorded = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).provenance.model.sha256;
    // The file the run started from is replaced by other weights of the same model.
    copyFileSync(await writeTinyCheckpoint(10), start);
    const { run, lines } = await resumeInFreshCluster(early, start);
    expect(run).toBeNull();
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `the unfinished run ${dir} is not resumed: run ${basename(dir)} started from .* with SHA-256 ${recorded}, but this Optimizer's checkpoint .* has SHA-256 [0-9a-f]{64}: the starting weights changed`,
      ),
    );
    expect(() => endOf(dir), "it stays unfinished").toThrow();
  }, 120_000);
});
