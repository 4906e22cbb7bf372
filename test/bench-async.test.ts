/**
 * The async-vs-sync benchmark, shortened for CI: the documented command runs a tiny run twice
 * through an `rlaif up` cluster (max_staleness 0, then 1, processes pinned with taskset) and
 * reports every figure it quotes (no timing is asserted). The full run is
 * `npx tsx bench/async.ts --steps 20`.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runBench } from "./helpers/run-bench.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

describe("async benchmark", () => {
  it("async benchmark - a shortened pair reports s/step, busy shares, learning curves and the ratio", async () => {
    const checkpoint = await writeTinyCheckpoint();
    const out = mkdtempSync(join(tmpdir(), "rlaif-bench-async-"));
    const flags = {
      steps: "3",
      checkpoint,
      backend: "wasm",
      "prompts-per-step": "2",
      "samples-per-prompt": "2",
      "max-new-tokens": "4",
      out,
    };
    const r = runBench("async.ts", flags, 540_000);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    const [sync, overlapped, pair] = lines;
    expect(sync).toMatchObject({ maxStaleness: 0, measuredSteps: 2, meanSampleStaleness: 0 });
    expect(overlapped).toMatchObject({ maxStaleness: 1, measuredSteps: 2, meanSampleStaleness: 1 });
    for (const run of [sync, overlapped]) {
      expect(run.pinned).toMatchObject({ policy: "1", optimizer: "0" });
      expect(run.secondsPerStep).toBeGreaterThan(0);
      expect(run.optimizerBusyFraction).toBeGreaterThan(0);
      expect(run.optimizerBusyFraction).toBeLessThanOrEqual(1);
      // One point per step: trajectories consumed so far (P×G a step) and the step's mean reward.
      expect(run.curve.map((p: number[]) => p[0])).toEqual([4, 8, 12]);
    }
    expect(pair.ratio).toBeCloseTo(sync.secondsPerStep / overlapped.secondsPerStep, 1);
  }, 600_000);

  it("async benchmark - bad flags exit 2 naming what to fix", () => {
    const r = runBench("async.ts", ["--modes", "0,9"], 120_000);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--modes 0,9/);
  });
});
