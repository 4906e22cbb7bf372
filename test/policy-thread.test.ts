/**
 * The embedded Policy in its own worker thread (cluster/policy-thread.ts): it serves on loopback
 * and follows weights published on the main thread's in-memory bus, a Policy that cannot start
 * fails with the thread's own reason, close() ends it, and a run trains to bitwise the same
 * weights with the Policy in its thread as on the main thread; with maxStaleness 1 a real
 * embedded run trains on samples at most one version old.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPolicyThread } from "../services/cluster/policy-thread.js";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { RpcError, WorkerThreadError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { checkpointFromModel, encodeCheckpoint } from "../services/core/src/model/checkpoint.js";
import { createTransformer } from "../services/core/src/model/transformer.js";
import { publishWeights } from "../services/core/src/weights/weights-channel.js";
import { differingTensors, runToEnd, tensorBytes } from "./helpers/resume-runs.js";
import { TINY_MODEL, tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

describe("policy thread", () => {
  let checkpoint: string;
  const bus = new MemoryBus();
  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint();
  });
  afterAll(() => bus.close());

  it("policy thread - serves from its own thread, follows weights published on this thread's bus, and close() ends it", async () => {
    const thread = await startPolicyThread({ host: "127.0.0.1", checkpoint, backend: "wasm", bus });
    const policy = createClient(PolicyService, thread.address, { defaultTimeoutMs: 20_000 });
    try {
      expect(Number((await policy.getInfo({})).weightsVersion)).toBe(0);
      const other = createTransformer(TINY_MODEL, 99);
      const blob = encodeCheckpoint(checkpointFromModel(other));
      other.dispose();
      await publishWeights(bus, { blob, runId: "r", step: 0, modelKind: "transformer" });
      await expect
        .poll(async () => Number((await policy.getInfo({})).weightsVersion), { timeout: 20_000 })
        .toBe(1);
      const gen = await policy.generate({
        prompts: ["The film was"],
        sampling: { maxNewTokens: 3, seed: 1n },
      });
      expect(gen.weightsVersion).toBe(1n);
      expect(gen.completions[0]?.tokens.length).toBeGreaterThan(0);
      // The thread worked: its event loop was busy for some of the time.
      expect(thread.eventLoopUtilization().active).toBeGreaterThan(0);
    } finally {
      await thread.close();
      await thread.close();
    }
    const err = await policy.getInfo({}, { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    policy.close();
  });

  it("policy thread - a Policy that cannot start fails with WorkerThreadError carrying the thread's reason", async () => {
    const err = await startPolicyThread({
      host: "127.0.0.1",
      checkpoint: "/nonexistent/model.safetensors",
      backend: "wasm",
      bus,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerThreadError);
    expect((err as Error).message).toMatch(
      /Policy thread could not start: CheckpointError: cannot read checkpoint \/nonexistent\/model\.safetensors/,
    );
  });

  it("policy thread - a run trains to bitwise the same weights with the Policy in its thread as on the main thread", async () => {
    const finals: string[] = [];
    for (const policyIn of ["thread", "main"] as const) {
      const config = tinyRunConfig(checkpoint, { steps: 2 });
      config.services.policyIn = policyIn;
      finals.push(join(await runToEnd(config), "final.safetensors"));
    }
    const [a, b] = await Promise.all(finals.map(tensorBytes));
    expect(a && b && differingTensors(a, b)).toEqual([]);
  });

  it("policy thread - an embedded run with maxStaleness 1 trains every step on samples at most one version old", async () => {
    const config = tinyRunConfig(checkpoint, { steps: 3, maxStaleness: 1, offPolicy: "ppo-clip" });
    const dir = await runToEnd(config);
    const metrics = (await readFile(join(dir, "metrics.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { step: number; trajectories: number; sampleStaleness?: number });
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3]);
    for (const m of metrics) {
      expect(m.trajectories).toBe(8);
      expect(m.sampleStaleness ?? 0).toBeLessThanOrEqual(1);
    }
  });
});
