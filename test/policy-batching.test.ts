/**
 * Batched serving in the Policy: concurrent Generate calls are answered exactly as one at a time,
 * Logprobs calls in one turn share passes and get their own answers, a replica past its row bound
 * answers RESOURCE_EXHAUSTED, and a weight swap never pulls a model from under a call using it.
 */
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { OverloadedError, RpcError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { toStatus } from "../services/core/src/grpc/status.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { sequenceLogprobs } from "../services/core/src/model/sampler.js";
import { encode } from "../services/core/src/model/tokenizer.js";
import { TransformerLM } from "../services/core/src/model/transformer.js";
import { publishWeights } from "../services/core/src/weights/weights-channel.js";
import { RowGate, ScoreBatcher } from "../services/policy/batcher.js";
import type { LoadedModel } from "../services/policy/loaded-model.js";
import { type PolicyServer, startPolicyServer } from "../services/policy/main.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";
import { TINY_MODEL, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const HOST = "127.0.0.1";

describe("policy batching", () => {
  let policy: PolicyServer;
  let pc: ReturnType<typeof createClient<typeof PolicyService>>;

  beforeAll(async () => {
    const checkpoint = await writeTinyCheckpoint();
    // a batch of 4 rows and a queue of 4 more: a third call of 4 rows is one too many
    policy = await startPolicyServer({
      host: HOST,
      port: 0,
      checkpoint,
      backend: "wasm",
      batchRows: 4,
      queueRows: 4,
    });
    pc = createClient(PolicyService, policy.server.address, { defaultTimeoutMs: 30_000 });
  });

  afterAll(async () => {
    pc?.close();
    await policy?.close();
  });

  it("policy batching - concurrent Generate calls equal their answers one at a time, bit for bit", async () => {
    const calls = [
      { prompts: ["The film was"], samplesPerPrompt: 2, sampling: { seed: 1n, maxNewTokens: 9 } },
      { prompts: ["I think", "She said"], sampling: { seed: 2n, maxNewTokens: 5, temperature: 0.5 } },
      { prompts: ["It is a"], sampling: { seed: 3n, maxNewTokens: 12, topK: 4, stop: ["e"] } },
    ];
    const alone = [];
    for (const c of calls) alone.push(await pc.generate(c));
    const together = await Promise.all(calls.map((c) => pc.generate(c)));
    expect(JSON.stringify(together.map((r) => r.completions))).toBe(
      JSON.stringify(alone.map((r) => r.completions)),
    );
  });

  it("policy batching - a call past one batch plus the queue fails with RESOURCE_EXHAUSTED; later it runs", async () => {
    const long = {
      prompts: ["Long call"],
      samplesPerPrompt: 4,
      sampling: { maxNewTokens: 30, ignoreEos: true },
    };
    const running = [pc.generate(long), pc.generate(long)];
    const refused = await pc.generate({ prompts: ["one more"] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RpcError);
    expect((refused as RpcError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((refused as RpcError).details).toMatch(/--policy-batch-rows, --policy-queue-rows/);
    await Promise.all(running);
    expect((await pc.generate({ prompts: ["one more"] })).completions).toHaveLength(1);
  });

  it("policy batching - RowGate holds one batch plus the queue, an idle gate takes any call, release frees rows", () => {
    const gate = new RowGate(4, 2, "rows");
    const a = gate.admit(5);
    expect(() => gate.admit(2)).toThrow(OverloadedError);
    const b = gate.admit(1);
    expect(gate.held).toBe(6);
    a();
    a();
    b();
    expect(gate.held).toBe(0);
    gate.admit(100)();
    expect(toStatus(new OverloadedError("busy"), { deadlineExceeded: false, cancelled: false }).code).toBe(
      grpc.status.RESOURCE_EXHAUSTED,
    );
  });

  it("policy batching - Logprobs calls in one turn share one pass and get their own answers; a bad call fails alone", async () => {
    await initBackend("wasm");
    const model = new TransformerLM(TINY_MODEL, 2);
    let passes = 0;
    const forward = model.forward.bind(model);
    model.forward = (...args) => {
      passes++;
      return forward(...args);
    };
    const scorer = new ScoreBatcher(model);
    const p = [encode("The film"), encode("Her")];
    const c = [encode(" was"), encode(" cat sat")];
    const together = await Promise.all([
      scorer.score([p[0] as number[]], [c[0] as number[]]),
      scorer.score([p[1] as number[]], [c[1] as number[]]),
    ]);
    // both rows pad to one width bucket: one forward pass for the two calls
    expect(passes).toBe(1);
    expect(JSON.stringify(together.flat())).toBe(JSON.stringify(sequenceLogprobs(model, p, c)));
    // a bad call is refused on its own; the call queued with it is answered
    const good = scorer.score([p[0] as number[]], [c[0] as number[]]);
    expect(() => scorer.score([[999]], [[1]])).toThrow(/prompts\[0\]\[1\]: token id/); // [BOS, 999]
    expect(JSON.stringify(await good)).toBe(JSON.stringify([together[0]?.[0]]));
    await scorer.idle();
    model.dispose();
  });

  it("policy replica - a swap during a call leaves the call on its version; the old model is freed when it ends", async () => {
    const disposed: string[] = [];
    let release: () => void = () => {};
    const fake = (name: string): LoadedModel =>
      ({
        kind: name,
        dispose: () => disposed.push(name),
        generate: () =>
          new Promise((resolve) => {
            release = () => resolve([]);
          }),
      }) as unknown as LoadedModel;
    const loader = {
      fromFile: () => fake("file"),
      fromBlob: (b: Uint8Array) => fake(new TextDecoder().decode(b)),
    };
    const bus = new MemoryBus();
    const replica = new PolicyReplica(fake("old"), loader);
    const call = replica.withModels(async (current) => {
      await current.model.generate([[1]], {
        maxNewTokens: 1,
        temperature: 1,
        topK: 0,
        topP: 1,
        seed: 0,
        stopAtEos: true,
      });
      return current.model.kind;
    });
    const blob = new TextEncoder().encode("new");
    await replica.apply(bus, await publishWeights(bus, { blob, runId: "r", step: 1, modelKind: "fake" }));
    // calls that start now get the new version; the running one still holds the old model
    expect(await replica.withModels((current) => current.model.kind)).toBe("new");
    expect(disposed).toEqual([]);
    release();
    expect(await call).toBe("old");
    expect(disposed).toEqual(["old"]);
    await replica.close();
    expect(disposed).toEqual(["old", "new"]);
    await bus.close();
  });
});
