/**
 * The speed benchmark, shortened for CI: `bench/speed.ts --smoke --json` runs every part end to
 * end (every policy kind on both sides, the sgemm peak, a 2-step embedded train run) and reports
 * every figure the README table quotes, and the rlaif and PyTorch sides computed the same thing.
 * No timing is asserted: times on a shared machine say nothing about correctness. The full run
 * (minutes) is `npx tsx bench/speed.ts`.
 *
 * Needs `/usr/bin/python3` with Debian's python3-torch (see .ci/run); skipped with a warning
 * where it is missing, a failure when CI is set (test/helpers/require-tool.ts).
 */
import { describe, expect, it } from "vitest";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { runBench } from "./helpers/run-bench.js";

const KINDS = ["transformer", "gru", "lstm", "seq2seq"];
/** float32 on both sides: observed ≤ 2e-5 (relative) and ≤ 5e-6 nats; a modelling mismatch is ≥ 1e-2. */
const TOLERANCE = 1e-4;

interface Figure {
  key: string;
  values: Record<string, number>;
  ratios?: Record<string, number>;
  check?: number;
}

const hasTorch = requireTool(TOOLS.pythonTorch);

describe.skipIf(!hasTorch)("speed benchmark", () => {
  it("speed benchmark - a smoke run reports every figure, finite, with rlaif and PyTorch agreeing", () => {
    const r = runBench("speed.ts", ["--smoke", "--json"], 300_000);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(report.backend).toMatch(/^(wasm|tensorflow|cpu)/);
    expect(report.torch.torch).toMatch(/^\d/);
    const figures = new Map<string, Figure>((report.figures as Figure[]).map((f) => [f.key, f]));
    const bothSides = [
      ...KINDS.flatMap((k) => [
        `learnerMs.${k}`,
        `samplingTokensPerSecond.${k}`,
        `logprobsMs.${k}`,
        `rssMb.${k}`,
      ]),
      "learnerGflops.transformer",
      "matmulGflops.mlp",
    ];
    for (const key of bothSides) {
      const f = figures.get(key);
      expect(f, key).toBeDefined();
      for (const side of ["rlaif", "torch1", "torch2"]) {
        expect(f?.values[side], `${key} ${side}`).toBeGreaterThan(0);
        expect(Number.isFinite(f?.values[side]), `${key} ${side}`).toBe(true);
      }
      for (const side of ["torch1", "torch2"])
        expect(Number.isFinite(f?.ratios?.[side]), `${key} ratio`).toBe(true);
    }
    // With the addon, each learner row also has rlaif on two OpenBLAS threads, and its 2-thread
    // ratio compares it (not the one-thread side) with PyTorch on two threads.
    if (report.backend.startsWith("wasm+blas")) {
      for (const k of KINDS) {
        const f = figures.get(`learnerMs.${k}`) as Figure;
        expect(f.values.rlaif2, `learnerMs.${k} rlaif2`).toBeGreaterThan(0);
        expect(f.ratios?.torch2).toBeCloseTo((f.values.rlaif2 as number) / (f.values.torch2 as number), 9);
        expect(f.ratios?.torch1).toBeCloseTo((f.values.rlaif as number) / (f.values.torch1 as number), 9);
      }
    }
    const torchOnly = figures.get("sgemmPeakGflops");
    expect(torchOnly?.values.torch1).toBeGreaterThan(0);
    expect(torchOnly?.values.torch2).toBeGreaterThan(0);
    for (const key of ["learnerPeakShare1.transformer", "learnerPeakShare2.transformer"]) {
      expect(Number.isFinite(figures.get(key)?.values.rlaif), key).toBe(true);
    }
    for (const run of ["train", "trainByte"]) {
      for (const key of ["stepsPerSecond", "cpuPerWall", "firstStepSeconds", "peakRssMb"]) {
        expect(figures.get(`${run}.${key}`)?.values.rlaif, `${run}.${key}`).toBeGreaterThan(0);
      }
      expect(Number.isFinite(figures.get(`${run}.rssGrowthMbPerStep`)?.values.rlaif)).toBe(true);
      expect(report.results[run].steps).toBe(2);
    }
    // Same work on both sides: every cross-check figure of every kind is small, and each row shows its own.
    for (const kind of KINDS) {
      const check = report.results.kinds[kind].check as Record<string, number>;
      expect(Object.keys(check).sort()).toEqual(
        ["entropy", "gradNorm", "logits", "logprobs", "loss", "lossAfterUpdate", "sampling"].sort(),
      );
      for (const [name, value] of Object.entries(check)) {
        expect(value, `${kind} ${name}`).toBeGreaterThanOrEqual(0);
        expect(value, `${kind} ${name}`).toBeLessThan(TOLERANCE);
      }
      expect(figures.get(`learnerMs.${kind}`)?.check).toBeLessThan(TOLERANCE);
      expect(report.results.kinds[kind].batch.rows).toBe(2);
    }
  }, 600_000);
});
