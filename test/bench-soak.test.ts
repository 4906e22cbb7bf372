/**
 * The soak benchmark, shortened for CI: the documented command runs a tiny embedded run for a
 * fixed number of steps and reports the memory series of every thread and the verdict. What it
 * asserts is the leak the soak was written to find: every weight swap on the Policy's thread
 * left a whole model's tensors alive (ParamModel's initial tensors), so the Policy thread's live
 * tensor count grew by one model per step. No RSS figure is asserted (a few steps of a tiny
 * model say nothing about RSS); the real soak is `npx tsx bench/soak.ts --minutes 30`.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runBench } from "./helpers/run-bench.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const soak = (flags: Record<string, string>) => runBench("soak.ts", flags, 300_000);

describe("soak benchmark", () => {
  it("soak benchmark - a shortened run samples every thread and no thread's live tensors grow", async () => {
    const checkpoint = await writeTinyCheckpoint();
    const r = soak({
      steps: "5",
      every: "1",
      "steady-step": "2",
      checkpoint,
      backend: "wasm",
      "prompts-per-step": "2",
      "samples-per-prompt": "2",
      "max-new-tokens": "4",
      "checkpoint-every": "0",
      out: mkdtempSync(join(tmpdir(), "rlaif-bench-soak-")),
    });
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split("\n");
    // One line per step (every 1), the verdict line, the JSON report.
    expect(lines.filter((l) => l.startsWith("step ")).length).toBe(5);
    const report = JSON.parse(lines.at(-1) as string);
    expect(report).toMatchObject({ steps: 5, steadyStep: 2, minutes: null });
    expect(report.rssMb.map((s: [number, number]) => s[0])).toEqual([1, 2, 3, 4, 5]);
    // Both threads hold a model; the main thread computes nothing.
    expect(report.tensors.policy.end).toBeGreaterThan(0);
    expect(report.tensors.learner.end).toBeGreaterThan(0);
    expect(report.tensors.main.end).toBe(0);
    expect(report.tensorsFlat).toBe(true);
    for (const thread of ["policy", "learner"])
      expect(report.tensors[thread].lastFifthMax).toBeLessThanOrEqual(report.tensors[thread].firstFifthMax);
  }, 600_000);

  it("soak benchmark - a steady step past the run's end is refused with exit 2", () => {
    const r = soak({ steps: "3", "steady-step": "4" });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--steady-step 4 is past the run's last step");
  });
});
