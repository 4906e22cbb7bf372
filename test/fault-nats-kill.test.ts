/**
 * Fault test: kill -9 nats-server (file store) in the middle of a run (while the Rollout holds unacked jobs),
 * restart it on the same address after 5 s; every service reconnects, the streams recover, and no process dies. The run completes, the Optimizer applies
 * every sample exactly once, and the final checkpoint loads.
 */
import { expect } from "vitest";
import { faultSuite } from "./helpers/fault-suite.js";

faultSuite("nats", "nats-server (file store)", (cluster) => {
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
});
