/**
 * The generic gRPC layer end to end, over loopback: typed handlers, validation, error mapping,
 * deadlines and cancellation, health and reflection. The services are small fakes; the real
 * ones are tested on their own.
 */

import { EventEmitter } from "node:events";
import * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import {
  GenerateStreamRequestSchema,
  PolicyService,
} from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { NotFoundError, PeerError, RpcError } from "../services/core/src/errors.js";
import { buildServiceDefinition, type ServiceImpl } from "../services/core/src/grpc/adapter.js";
import { checkHealth, createClient, isRetryable } from "../services/core/src/grpc/client.js";
import { implement, type RunningServer, startServer } from "../services/core/src/grpc/server.js";

const aborted: { reason?: string }[] = [];
const logged: string[] = [];
/** Releases of "held" calls, in arrival order: such a call answers when the test says so. */
const held: (() => void)[] = [];
/** How many "slow" calls have reached the handler. */
let slowStarted = 0;
/** How many "count" calls have reached the handler. */
let countStarted = 0;

/** Resolves when `signal` fires; records why, so tests can see the handler was told. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.addEventListener("abort", () => {
      aborted.push({ reason: (signal.reason as Error).name });
      reject(signal.reason);
    });
  });
}

const policy: ServiceImpl<typeof PolicyService> = {
  async generate(req, ctx) {
    const p = req.prompts[0];
    if (p === "slow") {
      slowStarted++;
      await untilAborted(ctx.signal);
    }
    if (p === "held") await new Promise<void>((resolve) => held.push(resolve));
    if (p === "count") countStarted++;
    if (p === "boom") throw new Error("boom");
    if (p === "missing") throw new NotFoundError("no such weights version");
    if (p === "peer") throw new PeerError("feedback unavailable");
    return {
      weightsVersion: 7n,
      completions: req.prompts.map((text, i) => ({
        promptIndex: i,
        text: `${text}!${ctx.metadata.traceparent ?? ""}`,
        tokens: [...Buffer.from(text)],
      })),
    };
  },
  async *generateStream(req, ctx) {
    const bytes = [...Buffer.from(req.prompt)];
    for (let i = 0; i < bytes.length; i++) {
      if (req.prompt.startsWith("endless") && i > 0) await new Promise((r) => setTimeout(r, 20));
      if (ctx.signal.aborted) {
        aborted.push({ reason: "stream" });
        return;
      }
      yield { index: i, token: bytes[i], weightsVersion: 7n };
      if (req.prompt.startsWith("endless")) i = 0;
    }
  },
  async logprobs(req) {
    return { results: req.sequences.map((s) => ({ logprobs: s.completionTokens.map(() => -1) })) };
  },
  getInfo: () => ({ modelKind: "fake", vocabSize: 258 }),
};

const feedback: ServiceImpl<typeof FeedbackService> = {
  async score(req) {
    return { scores: req.items.map((it) => ({ reward: it.completion.length })), scorerId: "fake" };
  },
  getInfo: () => ({ scorerId: "fake", maxBatchItems: 1024 }),
};

let server: RunningServer;
let client: ReturnType<typeof createClient<typeof PolicyService>>;

beforeAll(async () => {
  server = await startServer({
    host: "127.0.0.1",
    port: 0,
    services: [implement(PolicyService, policy), implement(FeedbackService, feedback)],
    log: (line) => logged.push(line),
  });
  client = createClient(PolicyService, server.address, { defaultTimeoutMs: 5000 });
});

afterAll(async () => {
  client.close();
  await server.shutdown(500);
});

/**
 * One gRPC call over plain HTTP/2 with a `grpc-timeout` header and no client-side timer, so only
 * the server's view of the deadline decides the outcome; resolves with the `grpc-status` trailer
 * and how many response bytes came before it.
 */
function rawCall(
  path: string,
  body: Uint8Array,
  timeout: string,
): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${server.address}`);
    session.on("error", reject);
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": timeout,
    });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    req.end(frame);
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    let code: number | undefined;
    const settle = (headers: http2.IncomingHttpHeaders) => {
      if (headers["grpc-status"] !== undefined) code = Number(headers["grpc-status"]);
    };
    req.on("response", settle);
    req.on("trailers", settle);
    req.on("close", () => {
      session.close();
      resolve({ status: code ?? -1, bytes });
    });
  });
}

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RpcError);
  return err as RpcError;
}

describe("grpc adapter", () => {
  it("unary - returns the typed response and passes metadata to the handler", async () => {
    const res = await client.generate(
      { prompts: ["a", "bc"], sampling: { temperature: 1 } },
      { timeoutMs: 2000, metadata: { traceparent: "00-abc-def-01" } },
    );
    expect(res.weightsVersion).toBe(7n);
    expect(res.completions.map((c) => c.text)).toEqual(["a!00-abc-def-01", "bc!00-abc-def-01"]);
    expect(res.completions[1]?.tokens).toEqual([98, 99]);
    const fb = createClient(FeedbackService, server.address, { defaultTimeoutMs: 2000 });
    const scored = await fb.score({ items: [{ prompt: "p", completion: "four" }] });
    expect(scored.scores[0]?.reward).toBe(4);
    expect(scored.scorerId).toBe("fake");
    fb.close();
  });

  it("streaming - yields every message in order", async () => {
    const tokens: number[] = [];
    for await (const msg of client.generateStream({ prompt: "hey" })) tokens.push(msg.token);
    expect(tokens).toEqual([104, 101, 121]);
  });

  it("streaming - breaking out early cancels the server's stream", async () => {
    const before = aborted.filter((a) => a.reason === "stream").length;
    let n = 0;
    for await (const _ of client.generateStream({ prompt: "endless" })) if (++n === 3) break;
    await expect
      .poll(() => aborted.filter((a) => a.reason === "stream").length, { timeout: 10_000 })
      .toBe(before + 1);
  });

  it("validation - a rule violation answers INVALID_ARGUMENT naming the field and the reason", async () => {
    const empty = await rpcError(client.generate({ prompts: [] }));
    expect(empty.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(empty.details).toBe("prompts: must have at least 1 item, got 0");
    const hot = await rpcError(client.generate({ prompts: ["x"], sampling: { temperature: 12 } }));
    expect(hot.details).toBe("sampling.temperature: must be between 0 and 10, got 12");
    const blank = await rpcError(client.generate({ prompts: ["x", ""], samplesPerPrompt: 2 }));
    expect(blank.details).toBe("prompts[1]: must not be empty");
    expect(isRetryable(blank)).toBe(false);
  });

  it("decoding - undecodable bytes answer INVALID_ARGUMENT and the server lives on", async () => {
    const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
    const garbage = Buffer.from([0x0a, 0x05, 0x61]); // field 1, length 5, only 1 byte follows
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      raw.makeUnaryRequest(
        "/rlaif.policy.v1.PolicyService/Generate",
        (b: Buffer) => b,
        (b: Buffer) => b,
        garbage,
        new grpc.Metadata(),
        { deadline: Date.now() + 30_000 },
        (e) => resolve(e),
      );
    });
    raw.close();
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/^request is not a valid rlaif\.policy\.v1\.GenerateRequest/);
    await expect(client.generate({ prompts: ["ok"] })).resolves.toBeDefined();
  });

  it("deadline - a slow handler gives DEADLINE_EXCEEDED and its AbortSignal fires", async () => {
    const before = aborted.length;
    // "slow" never answers on its own: only the 150 ms deadline can end this call.
    const err = await rpcError(client.generate({ prompts: ["slow"] }, { timeoutMs: 150 }));
    expect(err.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(isRetryable(err)).toBe(true);
    await expect.poll(() => aborted.length, { timeout: 10_000 }).toBe(before + 1);
    expect(aborted.at(-1)?.reason).toBe("TimeoutError");
    expect(logged.join("\n")).not.toMatch(/slow|Timeout/);
  });

  it("deadline - a stream the handler ends when its deadline fires answers DEADLINE_EXCEEDED, not OK", async () => {
    // A bare stand-in for grpc-js's server call: no grpc-js deadline timer of its own, so only
    // the adapter decides how a stream that its handler ended on the abort is answered.
    const { implementation } = buildServiceDefinition(PolicyService, policy);
    const outcome = await new Promise<string>((resolve) => {
      const call = Object.assign(new EventEmitter(), {
        request: Buffer.from(
          toBinary(GenerateStreamRequestSchema, create(GenerateStreamRequestSchema, { prompt: "endless" })),
        ),
        metadata: new grpc.Metadata(),
        getDeadline: () => new Date(Date.now() + 60),
        getPath: () => "/rlaif.policy.v1.PolicyService/GenerateStream",
        write: () => true,
        end: () => resolve("OK"),
      });
      call.on("error", (e: { code: number }) => resolve(grpc.status[e.code] ?? String(e.code)));
      (implementation.GenerateStream as (c: unknown) => void)(call);
    });
    expect(outcome).toBe("DEADLINE_EXCEEDED");
  });

  it("deadline - a call whose deadline passed on arrival never reaches its handler", async () => {
    const before = countStarted;
    const body = new BinaryWriter()
      .uint32((1 << 3) | WireType.LengthDelimited)
      .string("count")
      .finish();
    const res = await rawCall("/rlaif.policy.v1.PolicyService/Generate", body, "0n");
    expect(res.status).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(countStarted).toBe(before);
    await expect(client.generate({ prompts: ["count"] })).resolves.toBeDefined();
    expect(countStarted).toBe(before + 1);
  });

  it("cancel - the client's signal cancels the call and the handler's signal fires", async () => {
    const before = aborted.length;
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const err = await rpcError(client.generate({ prompts: ["slow"] }, { signal: ac.signal }));
    expect(err.code).toBe(grpc.status.CANCELLED);
    await expect.poll(() => aborted.length, { timeout: 10_000 }).toBe(before + 1);
    expect(aborted.at(-1)?.reason).toBe("AbortError");
  });

  it("errors - a plain Error answers INTERNAL with its message, is logged, and the server lives on", async () => {
    const err = await rpcError(client.generate({ prompts: ["boom"] }));
    expect(err.code).toBe(grpc.status.INTERNAL);
    expect(err.details).toBe("boom");
    expect(err.message).toContain("/rlaif.policy.v1.PolicyService/Generate: INTERNAL: boom");
    expect(logged.some((l) => l.includes("Generate failed") && l.includes("boom"))).toBe(true);
    await expect(client.getInfo({})).resolves.toMatchObject({ modelKind: "fake" });
  });

  it("errors - typed errors map to their status codes", async () => {
    expect((await rpcError(client.generate({ prompts: ["missing"] }))).code).toBe(grpc.status.NOT_FOUND);
    const peer = await rpcError(client.generate({ prompts: ["peer"] }));
    expect(peer.code).toBe(grpc.status.UNAVAILABLE);
    expect(peer.details).toBe("feedback unavailable");
    expect(isRetryable(peer)).toBe(true);
  });

  it("client - an unreachable address fails with UNAVAILABLE within the deadline", async () => {
    const dead = createClient(FeedbackService, "127.0.0.1:1", { defaultTimeoutMs: 1000 });
    const err = await rpcError(dead.score({ items: [{ prompt: "p", completion: "c" }] }));
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    dead.close();
    await expect(client.getInfo({}, { timeoutMs: 0 })).rejects.toThrow(/timeoutMs/);
  });

  it("health - SERVING for the server and each service, NOT_SERVING when told", async () => {
    expect(await checkHealth(server.address)).toBe("SERVING");
    expect(await checkHealth(server.address, "rlaif.policy.v1.PolicyService")).toBe("SERVING");
    expect(await checkHealth(server.address, "rlaif.feedback.v1.FeedbackService")).toBe("SERVING");
    server.setServing("rlaif.policy.v1.PolicyService", false);
    expect(await checkHealth(server.address, "rlaif.policy.v1.PolicyService")).toBe("NOT_SERVING");
    server.setServing("rlaif.policy.v1.PolicyService", true);
    const unknown = await rpcError(checkHealth(server.address, "nope.Service"));
    expect(unknown.code).toBe(grpc.status.NOT_FOUND);
  });

  it("reflection - lists the services and serves their file descriptors with imports", async () => {
    const list = await reflect(server.address, 7, "*");
    const names = fieldStrings(fieldBytes(list, 6)[0] ?? new Uint8Array(), 1).sort();
    expect(names).toEqual(
      expect.arrayContaining([
        "grpc.health.v1.Health",
        "rlaif.feedback.v1.FeedbackService",
        "rlaif.policy.v1.PolicyService",
      ]),
    );
    const files = await reflect(server.address, 4, "rlaif.policy.v1.PolicyService");
    const protos = fieldBytes(fieldBytes(files, 4)[0] ?? new Uint8Array(), 1).map((b) =>
      fromBinary(FileDescriptorProtoSchema, b),
    );
    const policyFile = protos.find((p) => p.name === "rlaif/policy/v1/policy.proto");
    expect(policyFile?.service[0]?.method.map((m) => m.name)).toEqual([
      "Generate",
      "GenerateStream",
      "Logprobs",
      "GetInfo",
    ]);
    expect(protos.map((p) => p.name)).toContain("rlaif/common/v1/types.proto");
  });
});

describe("grpc server", () => {
  it("shutdown - waits for an in-flight call that finishes within the grace period", async () => {
    const s = await startServer({ host: "127.0.0.1", port: 0, services: [implement(PolicyService, policy)] });
    const c = createClient(PolicyService, s.address, { defaultTimeoutMs: 30_000 });
    const events: string[] = [];
    const inflight = c
      .generate({ prompts: ["held"] })
      .then((r) => events.push(`answered ${r.weightsVersion}`));
    await expect.poll(() => held.length, { timeout: 10_000 }).toBe(1);
    // A grace period far beyond the test's own timeout: only the call's end can let shutdown finish.
    const closed = s.shutdown(600_000).then(() => events.push("closed"));
    await new Promise((r) => setTimeout(r, 100));
    events.push("released");
    held.shift()?.();
    await Promise.all([inflight, closed]);
    expect(events).toEqual(["released", "answered 7", "closed"]);
    c.close();
  });

  it("shutdown - forces a call still running when the grace period ends", async () => {
    const s = await startServer({ host: "127.0.0.1", port: 0, services: [implement(PolicyService, policy)] });
    const c = createClient(PolicyService, s.address, { defaultTimeoutMs: 600_000 });
    // "slow" ends only when its signal fires: neither the client's deadline nor the handler ends it.
    const slowBefore = slowStarted;
    const inflight = rpcError(c.generate({ prompts: ["slow"] }));
    await expect.poll(() => slowStarted, { timeout: 10_000 }).toBe(slowBefore + 1);
    await s.shutdown(200);
    expect([grpc.status.UNAVAILABLE, grpc.status.CANCELLED]).toContain((await inflight).code);
    c.close();
  });
});

/** One request on the raw ServerReflectionInfo stream (v1): `field` 7 = list_services, 4 = file_containing_symbol. */
function reflect(address: string, field: number, value: string): Promise<Uint8Array> {
  const raw = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = raw.makeBidiStreamRequest(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    (b: Uint8Array) => Buffer.from(b),
    (b: Buffer) => new Uint8Array(b),
    new grpc.Metadata(),
    { deadline: Date.now() + 30_000 },
  );
  return new Promise((resolve, reject) => {
    call.on("data", (msg: Uint8Array) => {
      resolve(msg);
      call.end();
      raw.close();
    });
    call.on("error", reject);
    call.write(new BinaryWriter().tag(field, WireType.LengthDelimited).string(value).finish());
  });
}

/** Every length-delimited value of field `no` in a serialized message. */
function fieldBytes(msg: Uint8Array, no: number): Uint8Array[] {
  const r = new BinaryReader(msg);
  const out: Uint8Array[] = [];
  while (r.pos < r.len) {
    const [n, wt] = r.tag();
    if (n === no && wt === WireType.LengthDelimited) out.push(r.bytes());
    else r.skip(wt);
  }
  return out;
}

/** Strings of field `no` of every sub-message of field 1 (ListServiceResponse.service[].name). */
function fieldStrings(msg: Uint8Array, no: number): string[] {
  return fieldBytes(msg, 1).flatMap((svc) => fieldBytes(svc, no).map((b) => new TextDecoder().decode(b)));
}
