/**
 * The learning benchmark, shortened for CI: the documented command runs end to end on the
 * default checkpoint (train a few steps, measure held-out samples before and after) and reports
 * every figure the README table quotes. The full run (minutes) is `npx tsx bench/learning.ts`.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runBench } from "./helpers/run-bench.js";

describe("learning benchmark", () => {
  it("learning benchmark - a shortened run reports before/after figures and moves the policy", () => {
    const out = mkdtempSync(join(tmpdir(), "rlaif-bench-"));
    const r = runBench(
      "learning.ts",
      ["--steps", "3", "--eval-prompts", "8", "--samples", "2", "--out", out, "--json"],
      300_000,
    );
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(Number(report.steps)).toBe(3);
    expect(report.evalPrompts).toBe(8);
    for (const side of [report.before, report.after]) {
      for (const k of [
        "meanReward",
        "stdReward",
        "positiveShare",
        "klToReference",
        "distinct2",
        "referencePerplexity",
      ]) {
        expect(Number.isFinite(side[k]), k).toBe(true);
      }
      expect(side.examples.length).toBeGreaterThan(0);
    }
    // The reference is the pretrained policy itself: KL 0 before (up to float error), not 0 after
    // training (a k1 estimate over 16 samples after 3 warm-up steps may come out either side of 0).
    expect(Math.abs(report.before.klToReference)).toBeLessThan(1e-3);
    expect(Math.abs(report.after.klToReference)).toBeGreaterThan(1e-3);
    expect(Object.keys(report.targets).sort()).toEqual([
      "klAtMost5Nats",
      "positiveShareAtLeastDoubles",
      "rewardRiseAtLeastOneStd",
    ]);
  }, 600_000);
});
