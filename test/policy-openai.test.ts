/**
 * The Policy's OpenAI-compatible HTTP API, called with the official `openai` npm client against a
 * real Policy on the tiny test model: the models list, completions (n > 1, prompt lists, seeds,
 * stop), streaming over SSE, chat, and the errors (400 naming the field, 401, 404, 429, 503).
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { type PolicyServer, startPolicyServer } from "../services/policy/main.js";
import { CHAT_TURN_STOP, renderChat } from "../services/policy/openai-wire.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const HOST = "127.0.0.1";
const TOKEN = "test-token-123";
const MODEL = "tiny-policy";

/** The `error` object of an OpenAI-shaped error answer. */
async function errorOf(res: Response): Promise<{ type: string; code: string | null; param: string | null }> {
  return ((await res.json()) as { error: { type: string; code: string | null; param: string | null } }).error;
}

describe("policy OpenAI API", () => {
  let policy: PolicyServer;
  let client: OpenAI;
  let baseURL: string;

  beforeAll(async () => {
    const checkpoint = await writeTinyCheckpoint();
    policy = await startPolicyServer({
      host: HOST,
      port: 0,
      checkpoint,
      backend: "wasm",
      batchRows: 4,
      queueRows: 4,
      openai: { port: 0, model: MODEL, token: TOKEN },
    });
    baseURL = policy.openai?.baseUrl ?? "";
    client = new OpenAI({ baseURL, apiKey: TOKEN, maxRetries: 0, timeout: 30_000 });
  });

  afterAll(async () => {
    await policy?.close();
  });

  it("policy OpenAI API - /v1/models lists the served model with its weights version", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect((models.data[0] as unknown as { weights_version: number }).weights_version).toBe(0);
    expect((await client.models.retrieve(MODEL)).id).toBe(MODEL);
  });

  it("policy OpenAI API - a completion equals the gRPC Generate answer for the same seed", async () => {
    const got = await client.completions.create({
      model: MODEL,
      prompt: "The film was",
      max_tokens: 8,
      temperature: 0.8,
      seed: 5,
    });
    expect(got.object).toBe("text_completion");
    expect(got.choices).toHaveLength(1);
    const pc = createClient(PolicyService, policy.server.address, { defaultTimeoutMs: 30_000 });
    const direct = await pc.generate({
      prompts: ["The film was"],
      sampling: { maxNewTokens: 8, temperature: 0.8, seed: 5n },
    });
    pc.close();
    const c = direct.completions[0];
    expect(got.choices[0]?.text).toBe(c?.text);
    expect(got.usage?.completion_tokens).toBe(c?.tokens.length);
    expect(got.usage?.prompt_tokens).toBe(c?.promptTokens.length);
    expect(got.system_fingerprint).toBe("weights-v0");
    expect(["stop", "length"]).toContain(got.choices[0]?.finish_reason);
  });

  it("policy OpenAI API - n > 1 and a list of prompts give prompt-major choices, each with its index", async () => {
    const got = await client.completions.create({
      model: MODEL,
      prompt: ["I think", "She said"],
      n: 3,
      max_tokens: 6,
      seed: 1,
    });
    expect(got.choices.map((c) => c.index)).toEqual([0, 1, 2, 3, 4, 5]);
    // three samples of one prompt are three random streams, not one answer repeated
    expect(new Set(got.choices.slice(0, 3).map((c) => c.text)).size).toBeGreaterThan(1);
    const again = await client.completions.create({
      model: MODEL,
      prompt: ["I think", "She said"],
      n: 3,
      max_tokens: 6,
      seed: 1,
    });
    expect(again.choices.map((c) => c.text)).toEqual(got.choices.map((c) => c.text));
  });

  it("policy OpenAI API - stream: true sends SSE chunks that join to the unstreamed text, then [DONE]", async () => {
    const params = { model: MODEL, prompt: "It is a", max_tokens: 10, seed: 3, stop: ["e"] };
    const whole = await client.completions.create(params);
    const stream = await client.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text += c.text;
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(whole.choices[0]?.text);
    expect(finish).toBe(whole.choices[0]?.finish_reason);
    expect(usage?.completion_tokens).toBe(whole.usage?.completion_tokens);
    expect(usage?.prompt_tokens).toBe(whole.usage?.prompt_tokens);
    // the raw wire: `data: {...}` events, the last one `data: [DONE]`
    const raw = await fetch(`${baseURL}/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ ...params, stream: true, n: 2 }),
    });
    expect(raw.headers.get("content-type")).toBe("text/event-stream");
    const events = (await raw.text()).split("\n\n").filter(Boolean);
    expect(events.at(-1)).toBe("data: [DONE]");
    const indexes = new Set(events.slice(0, -1).map((e) => JSON.parse(e.slice(6)).choices[0].index));
    expect([...indexes].sort()).toEqual([0, 1]);
  });

  it("policy OpenAI API - a chat completion samples the rendered conversation, stopped at the next turn", async () => {
    const messages = [
      { role: "system" as const, content: "Be kind" },
      { role: "user" as const, content: "Hi" },
    ];
    expect(renderChat(messages)).toBe("System: Be kind\nUser: Hi\nAssistant:");
    const got = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, seed: 2 });
    expect(got.object).toBe("chat.completion");
    expect(got.choices[0]?.message.role).toBe("assistant");
    const direct = await client.completions.create({
      model: MODEL,
      prompt: renderChat(messages),
      max_tokens: 8,
      seed: 2,
      stop: [CHAT_TURN_STOP],
    });
    expect(got.choices[0]?.message.content).toBe(direct.choices[0]?.text);
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 8,
      seed: 2,
      stream: true,
    });
    let text = "";
    let role: string | undefined;
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      text += chunk.choices[0]?.delta.content ?? "";
    }
    expect(role).toBe("assistant");
    expect(text).toBe(got.choices[0]?.message.content);
  });

  it("policy OpenAI API - bad input is a 400 naming the field in OpenAI's error shape", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ prompt: "x", temperature: 50 }, "temperature"],
      [{ prompt: "x", max_tokens: "ten" }, "max_tokens"],
      [{ prompt: "x", n: 0 }, "n"],
      [{ prompt: "x", n: 65 }, "n"],
      [{ prompt: ["ok", ""] }, "prompt[1]"],
      [{ prompt: [1, 2, 3] }, "prompt"],
      [{ prompt: "x", top_p: 0 }, "top_p"],
      [{ prompt: "x", logprobs: 2 }, "logprobs"],
      [{ prompt: "x".repeat(60) }, "prompt"],
    ];
    for (const [body, param] of cases) {
      const err = await client.completions
        .create({ model: MODEL, ...body } as unknown as OpenAI.CompletionCreateParamsNonStreaming)
        .catch((e: unknown) => e);
      expect(err, JSON.stringify(body)).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as InstanceType<typeof OpenAI.BadRequestError>).param, JSON.stringify(body)).toBe(param);
      expect((err as Error).message).toContain(param);
    }
    const chat = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "tool" as "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect((chat as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("messages[0].role");
    const raw = await fetch(`${baseURL}/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
      body: "{not json",
    });
    expect(raw.status).toBe(400);
    expect(await errorOf(raw)).toMatchObject({ type: "invalid_request_error", param: "body" });
  });

  it("policy OpenAI API - a missing or wrong token is 401, an unknown model or path 404", async () => {
    const wrong = new OpenAI({ baseURL, apiKey: "nope", maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const none = await fetch(`${baseURL}/models`);
    expect(none.status).toBe(401);
    expect((await errorOf(none)).code).toBe("invalid_api_key");
    const unknown = await client.completions.create({ model: "gpt-4", prompt: "x" }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect((unknown as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");
    const path = await fetch(`${baseURL}/embeddings`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(path.status).toBe(404);
  });

  it("policy OpenAI API - a full queue is 429 (as gRPC's RESOURCE_EXHAUSTED); HTTP and gRPC share the gate", async () => {
    const pc = createClient(PolicyService, policy.server.address, { defaultTimeoutMs: 30_000 });
    const long = {
      prompts: ["Long call"],
      samplesPerPrompt: 4,
      sampling: { maxNewTokens: 30, ignoreEos: true },
    };
    // gRPC fills one batch of 4 rows and the queue of 4: the HTTP call is one row too many
    const running = [pc.generate(long), pc.generate(long)];
    // sent after them on the same connection: once it is answered, both calls hold their rows
    await pc.getInfo({});
    const refused = await client.completions
      .create({ model: MODEL, prompt: "one more" })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect((refused as Error).message).toMatch(/--policy-queue-rows/);
    await Promise.all(running);
    expect((await client.completions.create({ model: MODEL, prompt: "one more" })).choices).toHaveLength(1);
    pc.close();
  });

  it("policy OpenAI API - a closing server answers 503; without --openai-port no HTTP API is served", async () => {
    const checkpoint = await writeTinyCheckpoint(3);
    const other = await startPolicyServer({
      host: HOST,
      port: 0,
      checkpoint,
      backend: "wasm",
      openai: { port: 0, model: MODEL },
    });
    const open = new OpenAI({ baseURL: other.openai?.baseUrl ?? "", apiKey: "unused", maxRetries: 0 });
    // a stream's response starts with its first token: from then on the call is surely running
    const busy = await open.completions.create({
      model: MODEL,
      prompt: "Long",
      max_tokens: 30,
      stream: true,
    });
    const closing = other.close();
    const late = await fetch(`${other.openai?.baseUrl}/models`);
    expect(late.status).toBe(503);
    expect((await errorOf(late)).code).toBe("shutting_down");
    let pieces = 0;
    for await (const _chunk of busy) pieces++;
    expect(pieces).toBeGreaterThan(0);
    await closing;
    const plain = await startPolicyServer({ host: HOST, port: 0, checkpoint, backend: "wasm" });
    expect(plain.openai).toBeUndefined();
    await plain.close();
  });
});
