/**
 * The replica benchmark, shortened for CI: real nats-server, Feedback, Policy and Rollout
 * processes on a tiny checkpoint; a second replica joins mid-run and must take jobs from the
 * shared queue with no configuration change, then leaves; every job's trajectories arrive once.
 * No timing is asserted (the full run is `npx tsx bench/replicas.ts`).
 */
import { describe, expect, it } from "vitest";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { runBench } from "./helpers/run-bench.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

describe.skipIf(!requireTool(TOOLS.natsServer))("replicas benchmark", () => {
  it("replicas benchmark - a replica joining mid-run takes work, and every job is delivered once", async () => {
    const checkpoint = await writeTinyCheckpoint();
    const flags = {
      "window-s": "2",
      "warmup-s": "1",
      samples: "2",
      "max-new-tokens": "4",
      concurrency: "2",
      checkpoint,
      backend: "wasm",
    };
    const r = runBench("replicas.ts", flags, 300_000);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    const { oneReplica, twoReplicas, afterLeave } = report.phases;
    expect(Object.keys(oneReplica.perReplica)).toEqual(["A"]);
    expect(Object.keys(twoReplicas.perReplica).sort()).toEqual(["A", "B"]);
    expect(Object.keys(afterLeave.perReplica)).toEqual(["A"]);
    // The joining replica was told nothing but the NATS URL, and still pulled jobs.
    expect(twoReplicas.perReplica.B).toBeGreaterThan(0);
    for (const p of [oneReplica, twoReplicas, afterLeave]) {
      expect(p.trajectoriesPerSecond).toBeGreaterThan(0);
      expect(p.tokensPerSecond).toBeGreaterThan(0);
      expect(p.natsMsgsPerTrajectory).toBeGreaterThan(0);
    }
    expect(twoReplicas.cpuPerWall.policyB).toBeGreaterThan(0);
    expect(report.accounting.lost).toBe(0);
    expect(report.accounting.duplicates).toBe(0);
    expect(report.accounting.delivered).toBe(report.accounting.expected);
    expect(report.ratio.trajectories).toBeGreaterThan(0);
  }, 300_000);
});
