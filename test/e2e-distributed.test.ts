import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalCluster, startLocalCluster } from "../services/cluster/local-cluster.js";
import { OptimizerService, RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { runConfigFromSettings } from "../services/core/src/config/run-config.js";
import { checkHealth, createClient } from "../services/core/src/grpc/client.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const hasNats = requireTool(TOOLS.natsServer);

describe.skipIf(!hasNats)("e2e(distributed)", () => {
  let cluster: LocalCluster;
  let checkpoint: string;

  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint();
    cluster = await startLocalCluster(tinyRunConfig(checkpoint), () => {});
  }, 180_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);

  it("e2e(distributed) - four service processes and nats-server are up and healthy", async () => {
    expect(Object.keys(cluster.pids).sort()).toEqual(["feedback", "optimizer", "policy", "rollout"]);
    expect(new Set([...Object.values(cluster.pids), process.pid]).size).toBe(5);
    for (const address of Object.values(cluster.addresses)) {
      expect(await checkHealth(address, "", 5000)).toBe("SERVING");
    }
    // The services connect as their own NATS users: a client without credentials gets nowhere.
    await expect(NatsBus.connect(cluster.natsUrl)).rejects.toThrow(/Authorization Violation/i);
  });

  it("e2e(distributed) - a run through the Optimizer's API trains and the Policy serves the new version", async () => {
    const config = tinyRunConfig(checkpoint);
    const optimizer = createClient(OptimizerService, cluster.addresses.optimizer, {
      defaultTimeoutMs: 30_000,
    });
    const policy = createClient(PolicyService, cluster.addresses.policy, { defaultTimeoutMs: 30_000 });
    const rollout = createClient(RolloutService, cluster.addresses.rollout, { defaultTimeoutMs: 30_000 });
    const { runId } = await optimizer.startRun({ config: runConfigFromSettings(config.run) });
    const steps: number[] = [];
    for await (const { metrics } of optimizer.watchMetrics({ runId }, { timeoutMs: 120_000 })) {
      steps.push(Number(metrics?.step));
      expect(metrics?.trajectories).toBe(8);
    }
    expect(steps).toEqual([1, 2, 3]);
    const status = await optimizer.getStatus({ runId });
    expect(status.state).toBe(RunState.SUCCEEDED);
    expect(status.summary?.mode).toBe("distributed");
    expect(status.summary?.trajectories).toBe(24);
    const finalVersion = status.summary?.finalWeightsVersion;

    let info = await policy.getInfo({});
    for (let i = 0; i < 100 && info.weightsVersion !== finalVersion; i++) {
      await new Promise((r) => setTimeout(r, 50));
      info = await policy.getInfo({});
    }
    expect(info.weightsVersion).toBe(finalVersion);
    const gen = await policy.generate({ prompts: ["Hello"], sampling: { maxNewTokens: 3 } });
    expect(gen.weightsVersion).toBe(finalVersion);

    // The Rollout worker in its own process did the sampling: 12 jobs, 24 trajectories.
    const counters = await rollout.getStatus({});
    expect(Number(counters.jobsCompleted)).toBe(12);
    expect(Number(counters.trajectoriesPublished)).toBe(24);
    for (const c of [optimizer, policy, rollout]) c.close();
  }, 180_000);
});
