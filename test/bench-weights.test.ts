/**
 * The weights distribution benchmark, shortened for CI: the documented command, on a real
 * nats-server, at 1 MB and 1–2 replicas, reports both paths and their ratio for every cell, and
 * the delta path's time and bytes (one layer of 12; no timing is asserted). The full run is `npx tsx bench/weights.ts` (5 and 50 MB, 1, 2, 4 replicas).
 */
import { describe, expect, it } from "vitest";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { runBench } from "./helpers/run-bench.js";

const hasNatsServer = requireTool(TOOLS.natsServer);

describe.skipIf(!hasNatsServer)("weights benchmark", () => {
  it("weights benchmark - a tiny run reports raw put+get, publish→serving and their ratio per cell", () => {
    const flags = ["--sizes-mb", "1", "--replicas", "1,2", "--repeats", "1", "--json"];
    const r = runBench("weights.ts", flags, 120_000);
    expect(r.stderr).not.toMatch(/could not swap|Error/);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(report.cells.map((c: { replicas: number }) => c.replicas)).toEqual([1, 2]);
    for (const c of report.cells) {
      expect(c.sizeBytes).toBeGreaterThan(1_000_000);
      expect(c.rawMs > 0 && c.weightsMs > 0).toBe(true);
      expect(c.ratio).toBeCloseTo(c.weightsMs / c.rawMs, 1);
      // The delta version carries one layer of 12 (plus the header), not the blob.
      expect(c.deltaMs).toBeGreaterThan(0);
      expect(c.deltaBytes).toBeGreaterThan(c.sizeBytes / 12);
      expect(c.deltaBytes).toBeLessThan(c.sizeBytes / 6);
    }
  }, 180_000);

  it("weights benchmark - a bad flag exits 2 naming it", () => {
    const r = runBench("weights.ts", ["--replicas", "x"], 60_000);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--replicas: 'x' is not a positive number/);
  }, 60_000);
});
