import { fromBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { StepMetricsSchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { runStateKey } from "../services/core/src/bus/subjects.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { readLatestWeights } from "../services/core/src/weights/weights-channel.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

describe("e2e(embedded)", () => {
  let cluster: EmbeddedCluster;
  let checkpoint: string;

  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint();
    cluster = await startEmbeddedCluster(tinyRunConfig(checkpoint));
  });
  afterAll(async () => {
    await cluster?.close();
  });

  it("e2e(embedded) - a short run scores samples, advances the weights version, and the Policy serves it", async () => {
    const config = tinyRunConfig(checkpoint);
    const policy = createClient(PolicyService, cluster.policyAddress, { defaultTimeoutMs: 10_000 });
    const before = await policy.getInfo({});
    const run = await cluster.optimizer.runs.start(config.run);
    const seen: number[] = [];
    run.watchers.add((m) => m && seen.push(Number(m.step)));
    const summary = await run.done;
    expect(run.error).toBe("");
    expect(summary).not.toBeNull();
    if (!summary) return;

    // Every step used P×G scored trajectories with finite rewards.
    expect(seen).toEqual([1, 2, 3]);
    expect(summary.steps).toBe(3);
    expect(summary.trajectories).toBe(3 * 4 * 2);
    for (const m of run.driver.history) {
      expect(m.trajectories).toBe(8);
      expect(Number.isFinite(m.meanReward)).toBe(true);
      expect(m.meanReward).toBeGreaterThanOrEqual(-1);
      expect(m.meanReward).toBeLessThanOrEqual(1);
      expect(Number.isFinite(m.gradNorm) && m.gradNorm > 0).toBe(true);
    }

    // Versions: the run's start (reference) plus one per step, and the pointer names the last.
    const latest = await readLatestWeights(cluster.bus);
    expect(Number(latest?.manifest.version)).toBe(Number(before.weightsVersion) + 1 + 3);
    expect(Number(summary.finalWeightsVersion)).toBe(Number(latest?.manifest.version));
    // Signed by the run's own key pair (no keys configured) and hashed per tensor.
    expect(latest?.manifest.signature).toHaveLength(64);
    expect(latest?.manifest.keyId).toMatch(/^[0-9a-f]{64}$/);
    expect(latest?.manifest.tensors.length).toBeGreaterThan(0);

    // The Policy swaps to the final version (it follows the pointer asynchronously).
    let info = await policy.getInfo({});
    for (let i = 0; i < 100 && info.weightsVersion !== summary.finalWeightsVersion; i++) {
      await new Promise((r) => setTimeout(r, 50));
      info = await policy.getInfo({});
    }
    expect(info.weightsVersion).toBe(summary.finalWeightsVersion);
    expect(Number(info.referenceVersion)).toBe(Number(before.weightsVersion) + 1);
    const gen = await policy.generate({ prompts: ["The film was"], sampling: { maxNewTokens: 4, seed: 1n } });
    expect(gen.weightsVersion).toBe(summary.finalWeightsVersion);

    // The run's state is in KV and its final checkpoint on disk.
    const state = await (await cluster.bus.kv()).get(runStateKey(run.runId));
    expect(state && Number(fromBinary(StepMetricsSchema, state.value).step)).toBe(3);
    expect(summary.checkpointPath).toMatch(/final\.safetensors$/);
    policy.close();
  });

  it("e2e(embedded) - the trained weights differ from the reference: Logprobs under both disagree", async () => {
    const policy = createClient(PolicyService, cluster.policyAddress, { defaultTimeoutMs: 10_000 });
    const seq = { prompt: "The film was", completion: " good" };
    const cur = await policy.logprobs({ sequences: [seq], weights: 1 });
    const ref = await policy.logprobs({ sequences: [seq], weights: 2 });
    expect(cur.results[0]?.logprobs).toHaveLength(5);
    expect(cur.weightsVersion).not.toBe(ref.weightsVersion);
    const diff = cur.results[0]?.logprobs.map((lp, i) => Math.abs(lp - (ref.results[0]?.logprobs[i] ?? lp)));
    expect(Math.max(...(diff ?? [0]))).toBeGreaterThan(1e-6);
    policy.close();
  });
});
