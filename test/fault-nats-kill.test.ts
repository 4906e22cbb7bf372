/**
 * Fault test: kill -9 nats-server (file store) in the middle of a run (while the Rollout holds unacked jobs),
 * restart it on the same address after 5 s; every service reconnects, the streams recover, and no process dies. The run completes, the Optimizer applies
 * every sample exactly once, and the final checkpoint loads.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { type FaultCluster, faultScenario, loadModel, startFaultCluster } from "./helpers/fault-cluster.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasNats = requireTool(TOOLS.natsServer);

describe.skipIf(!hasNats)("fault nats", () => {
  let cluster: FaultCluster;
  beforeAll(async () => {
    cluster = await startFaultCluster();
  }, 180_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);

  it("fault nats - kill -9 nats-server (file store) mid-run: the run completes, each sample applied once, the checkpoint loads", async () => {
    const { status, tally, finalCheckpoint } = await faultScenario(cluster, "nats");
    expect(status.state, `${status.error}\n${cluster.procs.optimizer.tail()}`).toBe(RunState.SUCCEEDED);
    expect(tally.twice).toBe(0);
    expect(tally.lost, tally.line).toBe(0);
    expect(tally.delivered).toBe(tally.expected);
    // No service died of the outage (an unhandled rejection would have ended its process).
    for (const p of Object.values(cluster.procs)) expect(p.crashes, `${p.name}:\n${p.tail()}`).toEqual([]);
    // Each NATS client noticed the outage, said so naming the server, and came back.
    const hostPort = cluster.natsUrl.replace("nats://", "");
    for (const name of ["policy", "rollout", "optimizer"] as const) {
      const lines = cluster.procs[name].lines;
      expect(
        lines.some((l) => l.includes("NATS: disconnected from") && l.includes(hostPort)),
        name,
      ).toBe(true);
      expect(
        lines.some((l) => l.includes("NATS: reconnected to")),
        name,
      ).toBe(true);
    }
    const model = await loadModel(finalCheckpoint);
    expect(model.params).toBeGreaterThan(0);
    expect(model.nonFinite).toBe(0);
  }, 420_000);
});
