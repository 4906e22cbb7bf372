/**
 * The body every fault test shares (test/fault-*.test.ts, one file per target so they run in
 * parallel): start the fault cluster, kill -9 `target` mid-run and restart it, then check that the
 * run completed, every sample was applied exactly once, no process crashed, and the final
 * checkpoint loads with finite weights. `more` adds the target's own checks.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunState } from "../../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import {
  type FaultCluster,
  type FaultTarget,
  faultScenario,
  loadModel,
  startFaultCluster,
} from "./fault-cluster.js";
import { requireTool, TOOLS } from "./require-tool.js";

/** Declares the fault test of `target`, titled "fault <target> - kill -9 <what> mid-run: …". */
export function faultSuite(target: FaultTarget, what: string, more?: (cluster: FaultCluster) => void): void {
  const hasNats = requireTool(TOOLS.natsServer);
  describe.skipIf(!hasNats)(`fault ${target}`, () => {
    let cluster: FaultCluster;
    beforeAll(async () => {
      cluster = await startFaultCluster();
    }, 180_000);
    afterAll(async () => {
      await cluster?.close();
    }, 60_000);

    it(`fault ${target} - kill -9 ${what} mid-run: the run completes, each sample applied once, the checkpoint loads`, async () => {
      const { status, tally, finalCheckpoint } = await faultScenario(cluster, target);
      expect(status.state, `${status.error}\n${cluster.procs.optimizer.tail()}`).toBe(RunState.SUCCEEDED);
      expect(tally.twice).toBe(0);
      expect(tally.lost, tally.line).toBe(0);
      expect(tally.delivered).toBe(tally.expected);
      // No service died (an unhandled rejection, for one, would have ended its process).
      for (const p of Object.values(cluster.procs)) expect(p.crashes, `${p.name}:\n${p.tail()}`).toEqual([]);
      const model = await loadModel(finalCheckpoint);
      expect(model.params).toBeGreaterThan(0);
      expect(model.nonFinite).toBe(0);
      more?.(cluster);
    }, 420_000);
  });
}
