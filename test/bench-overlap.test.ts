/**
 * The overlap benchmark, shortened for CI: the documented command runs a tiny embedded run with
 * max_staleness 1 end to end and reports every figure the README table quotes (no timing is
 * asserted). The full run is `npx tsx bench/overlap.ts --steps 10 [flags]`.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runBench } from "./helpers/run-bench.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

describe("overlap benchmark", () => {
  it("overlap benchmark - a shortened run reports steps/s, cpu/wall and both threads' busy shares", async () => {
    const checkpoint = await writeTinyCheckpoint();
    const out = mkdtempSync(join(tmpdir(), "rlaif-bench-overlap-"));
    const flags = {
      steps: "3",
      checkpoint,
      backend: "wasm",
      "prompts-per-step": "2",
      "samples-per-prompt": "2",
      "max-new-tokens": "4",
      "max-staleness": "1",
      "off-policy": "ppo-clip",
      out,
    };
    const r = runBench("overlap.ts", flags, 300_000);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(report).toMatchObject({
      policyIn: "thread",
      maxStaleness: 1,
      offPolicy: "ppo-clip",
      measuredSteps: 2,
    });
    for (const k of ["stepsPerSecond", "cpuPerWall", "mainBusy", "policyThreadBusy", "busySum"]) {
      expect(report[k] > 0, k).toBe(true);
    }
    expect(report.meanSampleStaleness).toBeGreaterThanOrEqual(0);
    expect(report.meanSampleStaleness).toBeLessThanOrEqual(1);
  }, 600_000);
});
