/**
 * Generate's min_weights_version: a replica behind the version a request needs waits for its swap
 * and samples with the new weights; one that does not get there answers FAILED_PRECONDITION
 * before the caller's deadline, without sampling; and the Rollout reads that as stale weights.
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { RpcError, StaleWeightsError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { publishWeights } from "../services/core/src/weights/weights-publisher.js";
import { type PolicyServer, startPolicyServer } from "../services/policy/main.js";
import { collectPrompt } from "../services/rollout/collect.js";
import { ScorerGuard } from "../services/rollout/scorer-guard.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

describe("policy min weights version", () => {
  let bus: MemoryBus;
  let policy: PolicyServer;
  let pc: ReturnType<typeof createClient<typeof PolicyService>>;
  let blob: Uint8Array;

  beforeAll(async () => {
    const checkpoint = await writeTinyCheckpoint();
    blob = new Uint8Array(readFileSync(checkpoint));
    bus = new MemoryBus();
    policy = await startPolicyServer({ host: "127.0.0.1", port: 0, checkpoint, backend: "wasm", bus });
    pc = createClient(PolicyService, policy.server.address, { defaultTimeoutMs: 30_000 });
  });

  afterAll(async () => {
    pc?.close();
    await policy?.close();
    await bus?.close();
  });

  it("policy min version - a call that needs the next version waits for the swap and samples with it", async () => {
    expect(policy.replica.serving.version).toBe(0);
    const waiting = pc.generate({
      prompts: ["The film was"],
      minWeightsVersion: 1n,
      sampling: { maxNewTokens: 4 },
    });
    let answered = false;
    void waiting.then(() => {
      answered = true;
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(answered).toBe(false);
    await publishWeights(bus, { blob, runId: "r", step: 1, modelKind: "transformer" });
    const res = await waiting;
    expect(res.weightsVersion).toBe(1n);
    expect(res.completions).toHaveLength(1);
    // a version already served needs no wait
    expect((await pc.generate({ prompts: ["x"], minWeightsVersion: 1n })).weightsVersion).toBe(1n);
  });

  it("policy min version - a version that does not arrive answers FAILED_PRECONDITION before the deadline", async () => {
    const started = performance.now();
    const err = await pc
      .generate({ prompts: ["The film was"], minWeightsVersion: 9n }, { timeoutMs: 600 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(grpc.status.FAILED_PRECONDITION);
    expect((err as RpcError).details).toBe("this replica serves weights v1; the request needs v9 or newer");
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("policy min version - the Rollout turns that refusal into StaleWeightsError, never into trajectories", async () => {
    const job = {
      runId: "r",
      step: 3,
      index: 0,
      prompt: "The film was",
      samples: 2,
      sampling: { maxNewTokens: 3 },
      minWeightsVersion: 9,
    };
    const feedback = { score: async () => ({ scores: [], scorerId: "none", scorerVersion: "" }) };
    const scorer = new ScorerGuard(feedback as never, { name: "none", timeoutMs: 600, retryMs: 0 });
    const err = await collectPrompt(pc, scorer, job, 600).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StaleWeightsError);
    expect((err as Error).message).toMatch(/needs v9 or newer/);
  });
});
