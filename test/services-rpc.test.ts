/**
 * Every rpc of the four services, over real loopback servers: a good call with real content, a
 * bad request answered INVALID_ARGUMENT (or NOT_FOUND / FAILED_PRECONDITION) naming the field, a
 * call past its deadline answered DEADLINE_EXCEEDED, and grpc.health.v1 reporting SERVING.
 *
 * Policy, Feedback and Rollout run as standalone servers without a bus (the Policy serves the tiny
 * checkpoint as version 0); the Optimizer needs Rollout and Policy following its bus to make
 * progress, so its rpcs go to an embedded cluster on a MemoryBus.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { toJson } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { FinishReason } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { OptimizerService, RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import {
  GetInfoResponseSchema,
  PolicyService,
  WeightsSelector,
} from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { RpcError } from "../services/core/src/errors.js";
import { checkHealth, createClient } from "../services/core/src/grpc/client.js";
import type { RunningServer } from "../services/core/src/grpc/server.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { type PolicyServer, startPolicyServer } from "../services/policy/main.js";
import { type RolloutServer, startRolloutServer } from "../services/rollout/main.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const { status } = grpc;
const HOST = "127.0.0.1";
const CLIENT = { defaultTimeoutMs: 30_000 };

/** The RpcError a call (unary promise or stream) fails with; fails the test if it succeeds. */
async function rpcError(call: Promise<unknown> | AsyncIterable<unknown>): Promise<RpcError> {
  try {
    if (Symbol.asyncIterator in call) {
      for await (const _ of call as AsyncIterable<unknown>) {
        // drain
      }
    } else {
      await call;
    }
  } catch (err) {
    expect(err).toBeInstanceOf(RpcError);
    return err as RpcError;
  }
  throw new Error("expected the call to fail");
}

/** Asserts INVALID_ARGUMENT whose details start with the field path, e.g. "prompts[0]: ...". */
async function expectInvalid(call: Promise<unknown> | AsyncIterable<unknown>, field: string): Promise<void> {
  const err = await rpcError(call);
  expect(err.code, err.message).toBe(status.INVALID_ARGUMENT);
  expect(err.details.startsWith(`${field}: `), err.details).toBe(true);
}

async function expectCode(call: Promise<unknown> | AsyncIterable<unknown>, code: number): Promise<RpcError> {
  const err = await rpcError(call);
  expect(err.code, err.message).toBe(code);
  return err;
}

/** Sends raw bytes to a unary method, for requests a typed client cannot produce. */
function rawUnary(
  address: string,
  path: string,
  bytes: Uint8Array,
): Promise<{ code: number; details: string }> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(bytes),
      new grpc.Metadata(),
      { deadline: new Date(Date.now() + 10_000) },
      (err) => {
        client.close();
        resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: "" });
      },
    );
  });
}

/** A fresh (unconnected) client whose call gets 1 ms: the deadline passes before any answer. */
function freshCall<T>(
  service: Parameters<typeof createClient>[0],
  address: string,
  call: (client: never) => Promise<T> | AsyncIterable<T>,
): Promise<RpcError> {
  const client = createClient(service, address, CLIENT);
  return rpcError(call(client as never)).finally(() => client.close());
}

async function poll<T>(
  what: string,
  read: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${String(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sha256File = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
/** Undecodable protobuf: field 1, length-delimited, claims 5 bytes that are not there. */
const TRUNCATED = Uint8Array.of(0x0a, 0x05);

let checkpoint: string;

beforeAll(async () => {
  checkpoint = await writeTinyCheckpoint();
});

describe("services rpc - policy, feedback, rollout (standalone, no bus)", () => {
  let policy: PolicyServer;
  let feedback: RunningServer;
  let rollout: RolloutServer;
  let pc: ReturnType<typeof createClient<typeof PolicyService>>;
  let fc: ReturnType<typeof createClient<typeof FeedbackService>>;
  let rc: ReturnType<typeof createClient<typeof RolloutService>>;

  beforeAll(async () => {
    policy = await startPolicyServer({ host: HOST, port: 0, checkpoint, backend: "wasm" });
    feedback = await startFeedbackServer({ host: HOST, port: 0 });
    rollout = await startRolloutServer({
      host: HOST,
      port: 0,
      policyAddress: policy.server.address,
      feedbackAddress: feedback.address,
      rpcTimeoutMs: 30_000,
    });
    pc = createClient(PolicyService, policy.server.address, CLIENT);
    fc = createClient(FeedbackService, feedback.address, CLIENT);
    rc = createClient(RolloutService, rollout.server.address, CLIENT);
  });

  afterAll(async () => {
    pc?.close();
    fc?.close();
    rc?.close();
    await rollout?.close();
    await feedback?.shutdown(1000);
    await policy?.close();
  });

  const sampling = { seed: 11n, temperature: 1, maxNewTokens: 10 };

  it("policy rpc - Generate returns samplesPerPrompt completions per prompt with matching tokens and log-probs", async () => {
    const prompts = ["The film was", "I think that"];
    const res = await pc.generate({ prompts, samplesPerPrompt: 3, sampling });
    expect(res.weightsVersion).toBe(0n);
    expect(res.completions).toHaveLength(6);
    res.completions.forEach((c, i) => {
      expect(c.promptIndex).toBe(Math.floor(i / 3));
      expect(c.sampleIndex).toBe(i % 3);
      expect(Buffer.from(c.promptTokens).toString("utf8")).toBe(prompts[c.promptIndex]);
      expect(c.tokens.length).toBeGreaterThan(0);
      expect(c.tokens.length).toBeLessThanOrEqual(10);
      expect(c.logprobs).toHaveLength(c.tokens.length);
      // each token's bytes (byte tokenizer: the byte itself, none for EOS) spell the text
      expect(c.tokenBytes.map((b) => [...b])).toEqual(c.tokens.map((t) => (t < 256 ? [t] : [])));
      expect(Buffer.concat(c.tokenBytes).toString("utf8")).toBe(c.text);
      for (const lp of c.logprobs) {
        expect(Number.isFinite(lp)).toBe(true);
        expect(lp).toBeLessThanOrEqual(0);
      }
      expect([FinishReason.LENGTH, FinishReason.EOS]).toContain(c.finishReason);
      if (c.finishReason === FinishReason.LENGTH) expect(c.tokens).toHaveLength(10);
    });
    // The G samples of one prompt are different draws, and the same seed reproduces them.
    const texts = res.completions.slice(0, 3).map((c) => c.tokens.join(","));
    expect(new Set(texts).size).toBeGreaterThan(1);
    const again = await pc.generate({ prompts, samplesPerPrompt: 3, sampling });
    expect(again.completions.map((c) => [...c.tokens])).toEqual(res.completions.map((c) => [...c.tokens]));
  });

  it("policy rpc - Generate with ignoreEos and greedy sampling fills maxNewTokens", async () => {
    const res = await pc.generate({
      prompts: ["It is a"],
      sampling: { temperature: 0, maxNewTokens: 7, ignoreEos: true },
    });
    expect(res.completions).toHaveLength(1);
    const c = res.completions[0];
    expect(c?.tokens).toHaveLength(7);
    expect(c?.finishReason).toBe(FinishReason.LENGTH);
  });

  it("policy rpc - Generate rejects an empty batch, a prompt longer than the context and a bad temperature", async () => {
    await expectInvalid(pc.generate({ prompts: [] }), "prompts");
    await expectInvalid(pc.generate({ prompts: ["ok", ""] }), "prompts[1]");
    await expectInvalid(pc.generate({ prompts: ["x".repeat(200)] }), "prompts[0]");
    await expectInvalid(pc.generate({ prompts: ["ok", "y".repeat(47)] }), "prompts[1]");
    await expectInvalid(
      pc.generate({ prompts: ["ok"], sampling: { temperature: 11 } }),
      "sampling.temperature",
    );
    await expectInvalid(pc.generate({ prompts: ["ok"], samplesPerPrompt: 65 }), "samples_per_prompt");
  });

  it("policy rpc - Generate past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const err = await freshCall(PolicyService, policy.server.address, (c: typeof pc) =>
      c.generate(
        { prompts: ["The film was"], samplesPerPrompt: 8, sampling: { maxNewTokens: 4096, ignoreEos: true } },
        { timeoutMs: 1 },
      ),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("policy rpc - GenerateStream yields the tokens and log-probs of a Generate with the same seed", async () => {
    const prompt = "She said";
    const params = { seed: 5n, temperature: 1, maxNewTokens: 12 };
    const gen = await pc.generate({ prompts: [prompt], sampling: params });
    const whole = gen.completions[0];
    const msgs = [];
    for await (const m of pc.generateStream({ prompt, sampling: params })) msgs.push(m);
    expect(msgs.map((m) => m.index)).toEqual(msgs.map((_, i) => i));
    expect(msgs.map((m) => m.token)).toEqual([...(whole?.tokens ?? [])]);
    msgs.forEach((m, i) => {
      expect(m.logprob).toBeCloseTo(whole?.logprobs[i] as number, 4);
      expect(m.weightsVersion).toBe(0n);
    });
    expect(msgs.slice(0, -1).every((m) => m.finishReason === FinishReason.UNSPECIFIED)).toBe(true);
    expect(msgs.at(-1)?.finishReason).toBe(whole?.finishReason);
    // The streamed text pieces join to exactly the Generate's text.
    expect(msgs.map((m) => m.text).join("")).toBe(whole?.text);
  });

  it("policy rpc - GenerateStream text pieces join to the Generate text even across split UTF-8 characters", async () => {
    // A random tiny model emits arbitrary bytes, so many seeds produce partial multi-byte characters.
    for (let seed = 1n; seed <= 30n; seed++) {
      const params = { seed, temperature: 1, maxNewTokens: 12 };
      const gen = await pc.generate({ prompts: ["The film was"], sampling: params });
      let text = "";
      for await (const m of pc.generateStream({ prompt: "The film was", sampling: params })) text += m.text;
      expect(text, `seed ${seed}`).toBe(gen.completions[0]?.text);
    }
  });

  it("policy rpc - Generate and GenerateStream stop at a stop sequence: tokens keep it, text leaves it out, stream pieces join to the same text", async () => {
    const prompt = "The film was";
    let stopped = 0;
    for (let seed = 1n; seed <= 12n; seed++) {
      const params = { seed, temperature: 1, maxNewTokens: 16, ignoreEos: true };
      const plain = (await pc.generate({ prompts: [prompt], sampling: params })).completions[0];
      // A two-byte stop from the sampled bytes: the first two adjacent ASCII bytes (its first byte
      // is held back from the stream until the second arrives), and one that starts the same way
      // but never completes (held back, then released).
      const t = [...(plain?.tokens ?? [])];
      const j = t.findIndex((a, i) => a < 128 && (t[i + 1] ?? 256) < 128);
      if (j < 0) continue;
      const stop = [
        String.fromCharCode(t[j] as number, t[j + 1] as number),
        `${String.fromCharCode(t[j] as number)}\u00ff`,
      ];
      const sampling = { ...params, stop };
      const whole = (await pc.generate({ prompts: [prompt], sampling })).completions[0];
      expect(whole?.finishReason, `seed ${seed}`).toBe(FinishReason.STOP);
      stopped++;
      expect(whole?.stop).toBe(stop[0]);
      // The tokens are the unstopped draw cut after the stop, with their log-probs.
      const n = j + 2;
      expect([...(whole?.tokens ?? [])]).toEqual(t.slice(0, n));
      expect(whole?.logprobs).toHaveLength(n);
      const bytes = Buffer.from((whole?.tokens ?? []).filter((t) => t < 256));
      const cut = bytes.length - Buffer.byteLength(whole?.stop ?? "");
      expect(new TextDecoder().decode(bytes.subarray(cut))).toBe(whole?.stop);
      expect(whole?.text).toBe(new TextDecoder().decode(bytes.subarray(0, cut)));
      const msgs = [];
      for await (const m of pc.generateStream({ prompt, sampling })) msgs.push(m);
      expect(msgs.map((m) => m.token)).toEqual([...(whole?.tokens ?? [])]);
      expect(msgs.map((m) => m.text).join(""), `seed ${seed}`).toBe(whole?.text);
      expect(msgs.at(-1)?.finishReason).toBe(FinishReason.STOP);
      expect(msgs.at(-1)?.stop).toBe(whole?.stop);
      expect(msgs.slice(0, -1).every((m) => m.stop === "")).toBe(true);
    }
    expect(stopped).toBeGreaterThan(3);
  });

  it("policy rpc - Generate and GenerateStream reject empty, too long and too many stop sequences", async () => {
    await expectInvalid(pc.generate({ prompts: ["ok"], sampling: { stop: ["", "."] } }), "sampling.stop[0]");
    await expectInvalid(
      pc.generate({ prompts: ["ok"], sampling: { stop: [".", "x".repeat(129)] } }),
      "sampling.stop[1]",
    );
    await expectInvalid(
      pc.generate({ prompts: ["ok"], sampling: { stop: Array.from({ length: 17 }, (_, i) => `s${i}`) } }),
      "sampling.stop",
    );
    await expectInvalid(pc.generateStream({ prompt: "ok", sampling: { stop: [""] } }), "sampling.stop[0]");
    await expectInvalid(rc.collect({ prompts: ["ok"], sampling: { stop: [""] } }), "sampling.stop[0]");
  });

  it("policy rpc - GenerateStream rejects an empty prompt and a prompt longer than the context", async () => {
    await expectInvalid(pc.generateStream({ prompt: "" }), "prompt");
    await expectInvalid(pc.generateStream({ prompt: "z".repeat(100) }), "prompt");
    await expectInvalid(pc.generateStream({ prompt: "ok", sampling: { topP: 2 } }), "sampling.top_p");
  });

  it("policy rpc - GenerateStream past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const err = await freshCall(PolicyService, policy.server.address, (c: typeof pc) =>
      c.generateStream(
        { prompt: "The film was", sampling: { maxNewTokens: 4096, ignoreEos: true } },
        { timeoutMs: 1 },
      ),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("policy rpc - Logprobs of a Generate's own tokens equal its log-probs, for current and reference weights", async () => {
    const gen = await pc.generate({ prompts: ["The film was", "It is a"], samplesPerPrompt: 2, sampling });
    const sequences = gen.completions.map((c) => ({
      promptTokens: c.promptTokens,
      completionTokens: c.tokens,
    }));
    for (const weights of [WeightsSelector.UNSPECIFIED, WeightsSelector.CURRENT, WeightsSelector.REFERENCE]) {
      const lp = await pc.logprobs({ sequences, weights });
      // Without a bus the reference is the served checkpoint itself: version 0 for both.
      expect(lp.weightsVersion).toBe(0n);
      expect(lp.results).toHaveLength(gen.completions.length);
      lp.results.forEach((r, i) => {
        const want = gen.completions[i]?.logprobs ?? [];
        expect(r.logprobs).toHaveLength(want.length);
        r.logprobs.forEach((v, t) => {
          expect(Math.abs(v - (want[t] as number))).toBeLessThan(1e-4);
        });
      });
    }
    // Text and token forms of the same sequence score the same.
    const byText = await pc.logprobs({ sequences: [{ prompt: "The film was", completion: " good" }] });
    const byTokens = await pc.logprobs({
      sequences: [
        { promptTokens: [...Buffer.from("The film was")], completionTokens: [...Buffer.from(" good")] },
      ],
    });
    expect(byText.results[0]?.logprobs).toHaveLength(5);
    byText.results[0]?.logprobs.forEach((v, i) => {
      expect(v).toBeCloseTo(byTokens.results[0]?.logprobs[i] as number, 5);
    });
  });

  it("policy rpc - Logprobs rejects empty batches, sequences without content, bad token ids and selectors", async () => {
    await expectInvalid(pc.logprobs({ sequences: [] }), "sequences");
    await expectInvalid(pc.logprobs({ sequences: [{ prompt: "a", completion: "b" }, {}] }), "sequences[1]");
    await expectInvalid(pc.logprobs({ sequences: [{ prompt: "a" }] }), "sequences[0].completion");
    await expectInvalid(
      pc.logprobs({ sequences: [{ prompt: "a", completionTokens: [1, 300] }] }),
      "sequences[0].completion_tokens[1]",
    );
    await expectInvalid(
      pc.logprobs({ sequences: [{ prompt: "a".repeat(40), completion: "b".repeat(10) }] }),
      "sequences[0]",
    );
    await expectInvalid(
      pc.logprobs({ sequences: [{ prompt: "a", completion: "b" }], weights: 9 as WeightsSelector }),
      "weights",
    );
  });

  it("policy rpc - Logprobs past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const sequences = Array.from({ length: 64 }, () => ({
      prompt: "The film was",
      completion: "x".repeat(30),
    }));
    const err = await freshCall(PolicyService, policy.server.address, (c: typeof pc) =>
      c.logprobs({ sequences, weights: WeightsSelector.REFERENCE }, { timeoutMs: 1 }),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("policy rpc - GetInfo describes the tiny model and versions, rejects an undecodable request", async () => {
    const info = await pc.getInfo({});
    expect(info.modelKind).toBe("transformer");
    expect(info.vocabSize).toBe(258);
    expect(info.contextLength).toBe(48);
    expect(info.parameterCount).toBeGreaterThan(0n);
    expect(info.weightsVersion).toBe(0n);
    expect(info.referenceVersion).toBe(0n);
    // Version 0 (the checkpoint loaded at start) is set, not absent, so proto3 JSON shows it.
    expect(toJson(GetInfoResponseSchema, info)).toMatchObject({ weightsVersion: "0", referenceVersion: "0" });
    expect(info.backend).toBe(loadBlas().addon !== null ? "wasm+blas" : "wasm");
    expect(JSON.parse(info.configJson)).toMatchObject({ dModel: 32, nLayers: 1, nHeads: 2 });
    expect(info.tokenizer).toMatch(/byte/);
    const raw = await rawUnary(policy.server.address, "/rlaif.policy.v1.PolicyService/GetInfo", TRUNCATED);
    expect(raw.code).toBe(status.INVALID_ARGUMENT);
    expect(raw.details).toMatch(/GetInfoRequest/);
  });

  it("policy rpc - GetInfo past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const err = await freshCall(PolicyService, policy.server.address, (c: typeof pc) =>
      c.getInfo({}, { timeoutMs: 1 }),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("feedback rpc - Score gives one score per item, positive text above negative text", async () => {
    const res = await fc.score({
      items: [
        { prompt: "The film was", completion: " wonderful, great and happy" },
        { prompt: "The film was", completion: " terrible, awful and sad" },
        { prompt: "The film was", completion: "" },
      ],
    });
    expect(res.scores).toHaveLength(3);
    expect(res.scorerId).toBe("rule-afinn165");
    expect(res.scorerVersion).not.toBe("");
    const [pos, neg, empty] = res.scores.map((s) => s.reward) as [number, number, number];
    expect(pos).toBeGreaterThan(0);
    expect(neg).toBeLessThan(0);
    expect(pos).toBeGreaterThan(neg);
    expect(empty).toBeLessThanOrEqual(neg);
    for (const s of res.scores) {
      expect(s.reward).toBeGreaterThanOrEqual(-1);
      expect(s.reward).toBeLessThanOrEqual(1);
      expect(s.rationale).not.toBe("");
    }
  });

  it("feedback rpc - Score rejects an empty batch and an oversized completion", async () => {
    await expectInvalid(fc.score({ items: [] }), "items");
    await expectInvalid(
      fc.score({
        items: [
          { prompt: "p", completion: "ok" },
          { prompt: "p", completion: "x".repeat(16_385) },
        ],
      }),
      "items[1].completion",
    );
  });

  it("feedback rpc - Score past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const items = Array.from({ length: 1024 }, (_, i) => ({
      prompt: "p",
      completion: `good ${i}`.repeat(20),
    }));
    const err = await freshCall(FeedbackService, feedback.address, (c: typeof fc) =>
      c.score({ items }, { timeoutMs: 1 }),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("rollout rpc - Collect returns scored trajectories with reference log-probs", async () => {
    const prompts = ["The film was", "I think that"];
    const res = await rc.collect({ prompts, samplesPerPrompt: 2, sampling });
    expect(res.trajectories).toHaveLength(4);
    res.trajectories.forEach((t, i) => {
      expect(t.promptIndex).toBe(Math.floor(i / 2));
      expect(t.sampleIndex).toBe(i % 2);
      expect(t.id).toBe(`collect.0.${t.promptIndex}.${t.sampleIndex}`);
      expect(t.prompt).toBe(prompts[t.promptIndex]);
      expect(Buffer.from(t.promptTokens).toString("utf8")).toBe(t.prompt);
      expect(t.completionTokens.length).toBeGreaterThan(0);
      expect(t.behaviourLogprobs).toHaveLength(t.completionTokens.length);
      expect(t.referenceLogprobs).toHaveLength(t.completionTokens.length);
      // No bus: the reference is the served weights, so the two log-prob sets agree.
      t.referenceLogprobs.forEach((lp, k) => {
        expect(Math.abs(lp - (t.behaviourLogprobs[k] as number))).toBeLessThan(1e-4);
      });
      expect(Number.isFinite(t.reward)).toBe(true);
      expect(t.reward).toBeGreaterThanOrEqual(-1);
      expect(t.reward).toBeLessThanOrEqual(1);
      expect(t.scorerId).toBe("rule-afinn165");
      expect(t.rationale).not.toBe("");
      expect(t.weightsVersion).toBe(0n);
    });
  });

  it("rollout rpc - Collect rejects an empty batch, an empty prompt and too many samples", async () => {
    await expectInvalid(rc.collect({ prompts: [] }), "prompts");
    await expectInvalid(rc.collect({ prompts: ["a", ""] }), "prompts[1]");
    await expectInvalid(rc.collect({ prompts: ["a"], samplesPerPrompt: 65 }), "samples_per_prompt");
    await expectInvalid(
      rc.collect({ prompts: ["a"], sampling: { temperature: -1 } }),
      "sampling.temperature",
    );
    // What only the Policy can judge (the context length) comes back as the Policy's own answer.
    await expectInvalid(rc.collect({ prompts: ["x".repeat(100)] }), "prompts[0]");
  });

  it("rollout rpc - Collect past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const err = await freshCall(RolloutService, rollout.server.address, (c: typeof rc) =>
      c.collect(
        { prompts: ["The film was"], samplesPerPrompt: 4, sampling: { maxNewTokens: 30 } },
        { timeoutMs: 1 },
      ),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("rollout rpc - GetStatus reports zero counters without a bus and the peer addresses", async () => {
    const s = await rc.getStatus({});
    expect(s.jobsCompleted).toBe(0n);
    expect(s.trajectoriesPublished).toBe(0n);
    expect(s.jobsFailed).toBe(0n);
    expect(s.policyAddress).toBe(policy.server.address);
    expect(s.feedbackAddress).toBe(feedback.address);
    const raw = await rawUnary(
      rollout.server.address,
      "/rlaif.rollout.v1.RolloutService/GetStatus",
      TRUNCATED,
    );
    expect(raw.code).toBe(status.INVALID_ARGUMENT);
  });

  it("rollout rpc - GetStatus past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const err = await freshCall(RolloutService, rollout.server.address, (c: typeof rc) =>
      c.getStatus({}, { timeoutMs: 1 }),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("services health - policy, feedback and rollout report SERVING overall and per service", async () => {
    for (const [address, name] of [
      [policy.server.address, "rlaif.policy.v1.PolicyService"],
      [feedback.address, "rlaif.feedback.v1.FeedbackService"],
      [rollout.server.address, "rlaif.rollout.v1.RolloutService"],
    ] as const) {
      expect(await checkHealth(address)).toBe("SERVING");
      expect(await checkHealth(address, name)).toBe("SERVING");
    }
    const unknown = await rpcError(checkHealth(policy.server.address, "rlaif.nope.v1.Nope"));
    expect(unknown.code).toBe(status.NOT_FOUND);
  });
});

describe("services rpc - optimizer (embedded cluster on a MemoryBus)", () => {
  let cluster: EmbeddedCluster;
  let oc: ReturnType<typeof createClient<typeof OptimizerService>>;
  let address: string;
  let firstRun = "";

  beforeAll(async () => {
    cluster = await startEmbeddedCluster(
      tinyRunConfig(checkpoint, { steps: 2, promptsPerStep: 2, samplesPerPrompt: 2 }),
    );
    address = cluster.optimizer.server.address;
    oc = createClient(OptimizerService, address, CLIENT);
  });

  afterAll(async () => {
    oc?.close();
    await cluster?.close();
  });

  const config = {
    steps: 2,
    promptsPerStep: 2,
    samplesPerPrompt: 2,
    sampling: { maxNewTokens: 6, temperature: 1 },
  };

  it("optimizer rpc - requests about no run yet are NOT_FOUND", async () => {
    await expectCode(oc.getStatus({}), status.NOT_FOUND);
    await expectCode(oc.checkpoint({}), status.NOT_FOUND);
  });

  it("optimizer rpc - StartRun then WatchMetrics streams every step of a 2-step run until it ends", async () => {
    const started = await oc.startRun({ config, runId: "rpc-run-1" });
    expect(started.runId).toBe("rpc-run-1");
    firstRun = started.runId;
    const steps = [];
    for await (const m of oc.watchMetrics({ runId: firstRun })) steps.push(m.metrics);
    expect(steps.map((m) => m?.step)).toEqual([1, 2]);
    let lastVersion = 0n;
    for (const m of steps) {
      expect(m?.runId).toBe(firstRun);
      expect(m?.trajectories).toBe(4);
      expect(Number.isFinite(m?.meanReward)).toBe(true);
      expect(Number.isFinite(m?.loss)).toBe(true);
      expect(m?.gradNorm).toBeGreaterThanOrEqual(0);
      // publishEvery 1: every step publishes a new version, after the run's starting version.
      expect(m?.weightsVersion).toBeGreaterThan(lastVersion);
      lastVersion = m?.weightsVersion ?? 0n;
    }
    // Watching an ended run replays its history and ends.
    const replay = [];
    for await (const m of oc.watchMetrics({})) replay.push(m.metrics?.step);
    expect(replay).toEqual([1, 2]);
  });

  it("optimizer rpc - GetStatus reports the ended run with its summary and last metrics", async () => {
    const s = await oc.getStatus({ runId: firstRun });
    expect(s.runId).toBe(firstRun);
    expect(s.state).toBe(RunState.SUCCEEDED);
    expect(s.step).toBe(2);
    expect(s.error).toBe("");
    expect(s.lastMetrics?.step).toBe(2);
    expect(s.summary?.steps).toBe(2);
    expect(s.summary?.trajectories).toBe(8);
    expect(s.summary?.mode).toBe("embedded");
    expect(s.summary?.finalWeightsVersion).toBe(s.lastMetrics?.weightsVersion);
    expect(existsSync(s.summary?.checkpointPath ?? "")).toBe(true);
    // "" means the most recent run.
    expect((await oc.getStatus({})).runId).toBe(firstRun);
    // The cluster's Policy replica followed the bus to the run's final weights.
    const pc = createClient(PolicyService, cluster.policyAddress, CLIENT);
    try {
      const info = await poll(
        "the policy to serve the final version",
        () => pc.getInfo({}),
        (i) => i.weightsVersion === s.summary?.finalWeightsVersion,
      );
      expect(info.referenceVersion).toBe(1n);
    } finally {
      pc.close();
    }
  });

  it("optimizer rpc - Checkpoint writes the run's weights and reports its SHA-256", async () => {
    const s = await oc.getStatus({ runId: firstRun });
    const c = await oc.checkpoint({ runId: firstRun });
    expect(c.step).toBe(2);
    expect(c.weightsVersion).toBe(s.summary?.finalWeightsVersion);
    expect(existsSync(c.path)).toBe(true);
    expect(c.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(sha256File(c.path)).toBe(c.sha256);
  });

  it("optimizer rpc - bad run ids are INVALID_ARGUMENT naming run_id, unknown ones NOT_FOUND", async () => {
    await expectInvalid(oc.getStatus({ runId: "bad id!" }), "run_id");
    await expectInvalid(oc.watchMetrics({ runId: "bad id!" }), "run_id");
    await expectInvalid(oc.checkpoint({ runId: "bad id!" }), "run_id");
    await expectInvalid(oc.pauseRun({ runId: "bad id!" }), "run_id");
    await expectInvalid(oc.unpauseRun({ runId: "bad id!" }), "run_id");
    await expectInvalid(oc.startRun({ config, runId: "bad id!" }), "run_id");
    const runId = "no-such-run";
    await expectCode(oc.getStatus({ runId }), status.NOT_FOUND);
    await expectCode(oc.watchMetrics({ runId }), status.NOT_FOUND);
    await expectCode(oc.checkpoint({ runId }), status.NOT_FOUND);
    await expectCode(oc.pauseRun({ runId }), status.NOT_FOUND);
    await expectCode(oc.unpauseRun({ runId }), status.NOT_FOUND);
  });

  it("optimizer rpc - StartRun rejects a missing config and out-of-range settings, and a reused run id", async () => {
    await expectInvalid(oc.startRun({}), "config");
    await expectInvalid(oc.startRun({ config: { steps: 0 } }), "config.steps");
    await expectInvalid(oc.startRun({ config: { learningRate: 0 } }), "config.learning_rate");
    await expectInvalid(oc.startRun({ config: { gamma: 1.5 } }), "config.gamma");
    await expectInvalid(oc.startRun({ config: { prompts: ["ok", ""] } }), "config.prompts[1]");
    // A prompt that cannot fit the model's context fails at start, not at every step.
    await expectInvalid(oc.startRun({ config: { prompts: ["ok", "y".repeat(100)] } }), "config.prompts[1]");
    await expectCode(oc.startRun({ config, runId: firstRun }), status.FAILED_PRECONDITION);
  });

  it("optimizer rpc - PauseRun and UnpauseRun of an ended run are FAILED_PRECONDITION", async () => {
    await expectCode(oc.pauseRun({ runId: firstRun }), status.FAILED_PRECONDITION);
    await expectCode(oc.unpauseRun({ runId: firstRun }), status.FAILED_PRECONDITION);
  });

  it("optimizer rpc - PauseRun holds a running run between steps, UnpauseRun lets it continue", async () => {
    const { runId } = await oc.startRun({ config: { ...config, steps: 10_000 }, runId: "rpc-run-long" });
    // A second run while one is active is refused.
    await expectCode(oc.startRun({ config }), status.FAILED_PRECONDITION);
    await poll(
      "the long run to take a step",
      () => oc.getStatus({ runId }),
      (s) => s.step >= 1,
    );
    expect((await oc.pauseRun({ runId })).state).toBe(RunState.PAUSED);
    expect((await oc.getStatus({ runId })).state).toBe(RunState.PAUSED);
    // The step in progress may finish; after that the count stays put.
    const settled = await poll(
      "the paused run to settle",
      async () => {
        const a = (await oc.getStatus({ runId })).step;
        await new Promise((r) => setTimeout(r, 400));
        return [a, (await oc.getStatus({ runId })).step] as const;
      },
      ([a, b]) => a === b,
    );
    await new Promise((r) => setTimeout(r, 400));
    expect((await oc.getStatus({ runId })).step).toBe(settled[1]);
    // Pausing twice is fine; resuming runs again.
    expect((await oc.pauseRun({ runId })).state).toBe(RunState.PAUSED);
    expect((await oc.unpauseRun({})).state).toBe(RunState.RUNNING);
    await poll(
      "the resumed run to take another step",
      () => oc.getStatus({ runId }),
      (s) => s.step > settled[1],
    );
    expect((await oc.getStatus({ runId })).state).toBe(RunState.RUNNING);
  });

  it("optimizer rpc - WatchMetrics of a running run ends with DEADLINE_EXCEEDED at its deadline", async () => {
    const seen: number[] = [];
    const err = await rpcError(
      (async function* () {
        for await (const m of oc.watchMetrics({ runId: "rpc-run-long" }, { timeoutMs: 800 })) {
          seen.push(m.metrics?.step ?? 0);
          yield m;
        }
      })(),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    // It replayed the history from step 1 before going live.
    expect(seen[0]).toBe(1);
    expect(seen).toEqual(seen.map((_, i) => i + 1));
  });

  it("optimizer rpc - every rpc past its deadline fails with DEADLINE_EXCEEDED", async () => {
    const calls: ((c: typeof oc) => Promise<unknown> | AsyncIterable<unknown>)[] = [
      (c) => c.startRun({ config }, { timeoutMs: 1 }),
      (c) => c.getStatus({}, { timeoutMs: 1 }),
      (c) => c.watchMetrics({}, { timeoutMs: 1 }),
      (c) => c.checkpoint({ runId: firstRun }, { timeoutMs: 1 }),
      (c) => c.pauseRun({ runId: firstRun }, { timeoutMs: 1 }),
      (c) => c.unpauseRun({ runId: firstRun }, { timeoutMs: 1 }),
      (c) => c.cancelRun({ runId: firstRun }, { timeoutMs: 1 }),
      (c) => c.listRuns({}, { timeoutMs: 1 }),
    ];
    for (const call of calls) {
      const err = await freshCall(OptimizerService, address, call as (c: never) => Promise<unknown>);
      expect(err.code, err.message).toBe(status.DEADLINE_EXCEEDED);
    }
    // None of them took effect: the long run still runs.
    expect((await oc.getStatus({})).state).toBe(RunState.RUNNING);
  });

  it("optimizer rpc - WatchMetrics from_step skips the steps before it", async () => {
    const runId = "rpc-run-long";
    await poll(
      "the long run to reach step 3",
      () => oc.getStatus({ runId }),
      (s) => s.step >= 3,
    );
    const seen: number[] = [];
    const err = await rpcError(
      (async function* () {
        for await (const m of oc.watchMetrics({ runId, fromStep: 3 }, { timeoutMs: 800 })) {
          seen.push(m.metrics?.step ?? 0);
          yield m;
        }
      })(),
    );
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    expect(seen[0]).toBe(3);
    expect(seen).toEqual(seen.map((_, i) => i + 3));
  });

  it("optimizer rpc - ListRuns pages the runs newest first", async () => {
    const all = await oc.listRuns({});
    expect(all.runs.map((r) => r.runId)).toEqual(["rpc-run-long", firstRun]);
    expect(all.runs[0]?.state).toBe(RunState.RUNNING);
    expect(all.runs[1]).toMatchObject({ state: RunState.SUCCEEDED, step: 2, steps: 2, error: "" });
    expect(all.nextPageToken).toBe("");
    const first = await oc.listRuns({ pageSize: 1 });
    expect(first.runs.map((r) => r.runId)).toEqual(["rpc-run-long"]);
    const second = await oc.listRuns({ pageSize: 1, pageToken: first.nextPageToken });
    expect(second.runs.map((r) => r.runId)).toEqual([firstRun]);
    expect(second.nextPageToken).toBe("");
    await expectInvalid(oc.listRuns({ pageToken: "garbage" }), "page_token");
    await expectInvalid(oc.listRuns({ pageSize: 5000 }), "page_size");
  });

  it("optimizer rpc - CancelRun ends a running run CANCELLED with its last step checkpointed; then a new run may start", async () => {
    const runId = "rpc-run-long";
    await expectInvalid(oc.cancelRun({ runId: "bad id!" }), "run_id");
    await expectCode(oc.cancelRun({ runId: "no-such-run" }), status.NOT_FOUND);
    const res = await oc.cancelRun({ runId });
    expect(res.state).toBe(RunState.CANCELLED);
    const st = await oc.getStatus({ runId });
    expect(st.state).toBe(RunState.CANCELLED);
    expect(st.step).toBe(res.step);
    // Its last completed step is resumable (a checkpoint of the stopped run is of that step).
    const c = await oc.checkpoint({ runId });
    expect(c.step).toBe(res.step);
    expect(existsSync(c.path)).toBe(true);
    // Cancelling again is a no-op; pausing an ended run is refused.
    expect((await oc.cancelRun({ runId })).state).toBe(RunState.CANCELLED);
    await expectCode(oc.pauseRun({ runId }), status.FAILED_PRECONDITION);
    const next = await oc.startRun({ config, runId: "rpc-run-after-cancel" });
    expect(next.runId).toBe("rpc-run-after-cancel");
    await oc.cancelRun({ runId: next.runId });
  });

  it("services health - optimizer reports SERVING overall and for its service", async () => {
    expect(await checkHealth(address)).toBe("SERVING");
    expect(await checkHealth(address, "rlaif.optimizer.v1.OptimizerService")).toBe("SERVING");
  });
});
