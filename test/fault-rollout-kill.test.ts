/**
 * Fault test: kill -9 the Rollout worker holding unacked jobs in the middle of a run (while the Rollout holds unacked jobs),
 * restart it on the same address after 5 s; its jobs come back after their ack wait. The run completes, the Optimizer applies
 * every sample exactly once, and the final checkpoint loads.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { type FaultCluster, faultScenario, loadModel, startFaultCluster } from "./helpers/fault-cluster.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasNats = requireTool(TOOLS.natsServer);

describe.skipIf(!hasNats)("fault rollout", () => {
  let cluster: FaultCluster;
  beforeAll(async () => {
    cluster = await startFaultCluster();
  }, 180_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);

  it("fault rollout - kill -9 the Rollout worker holding unacked jobs mid-run: the run completes, each sample applied once, the checkpoint loads", async () => {
    const { status, tally, finalCheckpoint } = await faultScenario(cluster, "rollout");
    expect(status.state, `${status.error}\n${cluster.procs.optimizer.tail()}`).toBe(RunState.SUCCEEDED);
    expect(tally.twice).toBe(0);
    expect(tally.lost, tally.line).toBe(0);
    expect(tally.delivered).toBe(tally.expected);
    for (const p of Object.values(cluster.procs)) expect(p.crashes, `${p.name}:\n${p.tail()}`).toEqual([]);
    const model = await loadModel(finalCheckpoint);
    expect(model.params).toBeGreaterThan(0);
    expect(model.nonFinite).toBe(0);
  }, 420_000);
});
