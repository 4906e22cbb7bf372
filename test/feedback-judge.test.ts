/**
 * The LLM judge (services/feedback/judge.ts): score and preference parsing, the requests it sends,
 * retries on 429/5xx only, deadlines, and API keys, against a test-only HTTP server that answers
 * fixed texts; then one rlaif Policy judging another through the Policy's OpenAI endpoint.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../services/core/src/errors.js";
import { Judge, parsePreference, parseScore, resolveJudgeApiKey } from "../services/feedback/judge.js";
import { type PolicyServer, startPolicyServer } from "../services/policy/main.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const RUBRIC = "Rate the continuation of {prompt} with {completion}. Reply 'Score: N' (0-10).";

interface Seen {
  url: string;
  auth: string | undefined;
  body: Record<string, unknown>;
}

/** An answer of the fixed server: a status and a JSON body, or "hang" (never answers). */
type Reply = { status: number; body: unknown; headers?: Record<string, string> } | "hang";

/** A fake OpenAI-compatible server: each request takes the next reply (the last one repeats). */
async function fixedServer(): Promise<{
  url: string;
  seen: Seen[];
  replies: Reply[];
  close(): Promise<void>;
}> {
  const seen: Seen[] = [];
  const replies: Reply[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let raw = "";
    req.on("data", (c: Buffer) => {
      raw += c.toString();
    });
    req.on("end", () => {
      seen.push({ url: req.url ?? "", auth: req.headers.authorization, body: JSON.parse(raw) });
      const reply = (replies.length > 1 ? replies.shift() : replies[0]) as Reply;
      if (reply === "hang") return;
      res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
      res.end(JSON.stringify(reply.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    seen,
    replies,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

const text = (t: string): Reply => ({ status: 200, body: { choices: [{ index: 0, text: t }] } });
const chatText = (t: string): Reply => ({
  status: 200,
  body: { choices: [{ index: 0, message: { role: "assistant", content: t } }] },
});
const failure = (status: number, message = "busy"): Reply => ({ status, body: { error: { message } } });

describe("feedback judge", () => {
  let fake: Awaited<ReturnType<typeof fixedServer>>;

  beforeAll(async () => {
    fake = await fixedServer();
  });
  afterEach(() => {
    fake.seen.length = 0;
    fake.replies.length = 0;
  });
  afterAll(async () => {
    await fake.close();
  });

  it("feedback judge - parseScore takes 'Score: N' or a bare number in range, and explains every refusal", () => {
    expect(parseScore("Fluent and kind.\nScore: 7")).toEqual({ score: 7 });
    expect(parseScore("**Score:** 8.5/10 because it is vivid")).toEqual({ score: 8.5 });
    expect(parseScore("The score is 3")).toEqual({ score: 3 });
    expect(parseScore(" 6. ")).toEqual({ score: 6 });
    expect(parseScore("Score: 4", [1, 5])).toEqual({ score: 4 });
    // numbers in prose are not scores
    expect(parseScore("2 of the 3 sentences are fine")).toMatchObject({ reason: /no score/ });
    expect(parseScore("Score: 12")).toMatchObject({ reason: /12 is outside \[0, 10\]/ });
    expect(parseScore("Score: 4/5")).toMatchObject({ reason: /out of 5/ });
    expect(parseScore("")).toMatchObject({ reason: /no score.*got ""/ });
  });

  it("feedback judge - parsePreference takes 'Preferred: A|B' or a bare letter, nothing vaguer", () => {
    expect(parsePreference("B is more fluent.\nPreferred: B")).toEqual({ preferred: "B" });
    expect(parsePreference("**Winner:** Response A")).toEqual({ preferred: "A" });
    expect(parsePreference("(A)")).toEqual({ preferred: "A" });
    expect(parsePreference("verdict: a tie")).toMatchObject({ reason: /no preference/ });
    expect(parsePreference("Both are good")).toMatchObject({ reason: /no preference/ });
  });

  it("feedback judge - completions mode sends the filled rubric with the key and returns reward and rationale", async () => {
    fake.replies.push(text(" Vivid and positive. Score: 9"), text("I cannot judge this."));
    const judge = new Judge({
      baseUrl: fake.url,
      model: "judge-1",
      apiKey: "k-1",
      mode: "completions",
      rubric: RUBRIC,
      concurrency: 1,
    });
    const got = await judge.score([
      { prompt: "The film", completion: " was great" },
      { prompt: "It $& is", completion: " bad" },
    ]);
    expect(got[0]).toEqual({ status: "ok", reward: 9, rationale: "Vivid and positive. Score: 9" });
    expect(got[1]).toMatchObject({
      status: "error",
      reason: expect.stringMatching(/no score.*I cannot judge this/),
    });
    expect(fake.seen.map((s) => s.url)).toEqual(["/v1/completions", "/v1/completions"]);
    expect(fake.seen[0]?.auth).toBe("Bearer k-1");
    expect(fake.seen[0]?.body).toMatchObject({
      model: "judge-1",
      temperature: 0,
      prompt: expect.stringContaining("of The film with  was great."),
    });
    // placeholder values go in as they are ($& is not a replacement pattern)
    expect(fake.seen[1]?.body.prompt).toContain("of It $& is with  bad.");
    expect(judge.provenance.rubricSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("feedback judge - chat mode asks /chat/completions with one user message; pairwise returns A or B or an error", async () => {
    fake.replies.push(chatText("Score: 2"), chatText("Preferred: B"), chatText("Hard to say."));
    const judge = new Judge({
      baseUrl: `${fake.url}/`,
      model: "m",
      mode: "chat",
      rubric: RUBRIC,
      concurrency: 1,
    });
    expect(await judge.score([{ prompt: "p", completion: "c" }])).toEqual([
      { status: "ok", reward: 2, rationale: "Score: 2" },
    ]);
    const verdicts = await judge.compare([
      { prompt: "p", a: "first", b: "second" },
      { prompt: "p", a: "x", b: "y" },
    ]);
    expect(verdicts[0]).toMatchObject({ status: "ok", preferred: "B" });
    expect(verdicts[1]).toMatchObject({
      status: "error",
      reason: expect.stringMatching(/no preference.*Hard to say/),
    });
    expect(fake.seen[0]?.url).toBe("/v1/chat/completions");
    expect(fake.seen[0]?.body.messages).toEqual([
      { role: "user", content: expect.stringContaining("of p with c.") },
    ]);
    const pairwise = ((fake.seen[1]?.body.messages ?? []) as { content: string }[])[0]?.content;
    expect(pairwise).toMatch(/Response A: first\nResponse B: second/);
  });

  it("feedback judge - 429 and 5xx are retried with backoff; 4xx is not; retries run out into an error", async () => {
    const fast = {
      baseUrl: fake.url,
      model: "m",
      mode: "completions" as const,
      rubric: RUBRIC,
      backoffMs: 5,
      retries: 3,
    };
    fake.replies.push(failure(429), failure(503), text("Score: 5"));
    expect(await new Judge(fast).score([{ prompt: "p", completion: "c" }])).toMatchObject([
      { status: "ok", reward: 5 },
    ]);
    expect(fake.seen).toHaveLength(3);

    fake.seen.length = 0;
    fake.replies.length = 0;
    fake.replies.push(failure(400, "max_tokens: too big"));
    const bad = await new Judge(fast).score([{ prompt: "p", completion: "c" }]);
    expect(bad[0]).toMatchObject({
      status: "error",
      reason: expect.stringMatching(/HTTP 400: max_tokens: too big/),
    });
    expect(fake.seen).toHaveLength(1);

    fake.seen.length = 0;
    fake.replies.length = 0;
    fake.replies.push(failure(500, "boom"));
    const down = await new Judge(fast).score([{ prompt: "p", completion: "c" }]);
    expect(down[0]).toMatchObject({
      status: "error",
      reason: expect.stringMatching(/HTTP 500: boom \(after 4 attempts\)/),
    });
    expect(fake.seen).toHaveLength(4);
  });

  it("feedback judge - a hung judge is an error at the deadline, not a reward; a refused connection too", async () => {
    fake.replies.push("hang");
    const judge = new Judge({
      baseUrl: fake.url,
      model: "m",
      mode: "completions",
      rubric: RUBRIC,
      timeoutMs: 300,
    });
    expect(await judge.score([{ prompt: "p", completion: "c" }])).toMatchObject([
      { status: "error", reason: expect.stringMatching(/no answer within 300 ms/) },
    ]);
    expect(fake.seen).toHaveLength(1); // a timeout is not retried
    // the caller's own signal (a Score call's deadline) ends the wait too
    fake.seen.length = 0;
    const caller = AbortSignal.timeout(100);
    const slow = new Judge({
      baseUrl: fake.url,
      model: "m",
      mode: "completions",
      rubric: RUBRIC,
      timeoutMs: 60_000,
    });
    expect(await slow.score([{ prompt: "p", completion: "c" }], caller)).toMatchObject([
      { status: "error", reason: expect.stringMatching(/cancelled by the caller/) },
    ]);
    // a port nothing listens on: bound and closed again
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const gone = new Judge({
      baseUrl: `http://127.0.0.1:${port}/v1`,
      model: "m",
      mode: "chat",
      rubric: RUBRIC,
    });
    expect(await gone.compare([{ prompt: "p", a: "a", b: "b" }])).toMatchObject([
      { status: "error", reason: expect.stringMatching(/ECONNREFUSED/) },
    ]);
  });

  it("feedback judge - the key comes from an env var or a file; a missing one, a bad rubric or URL fail at start", () => {
    expect(resolveJudgeApiKey({ apiKeyEnv: "JUDGE_KEY" }, { JUDGE_KEY: "from-env" })).toBe("from-env");
    expect(() => resolveJudgeApiKey({ apiKeyEnv: "JUDGE_KEY" }, {})).toThrow(/JUDGE_KEY is not set/);
    const file = join(mkdtempSync(join(tmpdir(), "rlaif-judge-")), "key");
    writeFileSync(file, "from-file\n");
    expect(resolveJudgeApiKey({ apiKeyFile: file })).toBe("from-file");
    expect(resolveJudgeApiKey({})).toBeUndefined();
    expect(
      () => new Judge({ baseUrl: fake.url, model: "m", mode: "chat", rubric: "Rate {completion}" }),
    ).toThrow(ConfigError);
    expect(() => new Judge({ baseUrl: "localhost", model: "m", mode: "chat", rubric: RUBRIC })).toThrow(
      /not a URL/,
    );
  });
});

describe("feedback judge against a Policy", () => {
  let judged: PolicyServer;

  beforeAll(async () => {
    judged = await startPolicyServer({
      host: "127.0.0.1",
      port: 0,
      checkpoint: await writeTinyCheckpoint(11),
      backend: "wasm",
      openai: { port: 0, model: "judge-policy", token: "t" },
    });
  });
  afterAll(async () => {
    await judged?.close();
  });

  it("feedback judge - one rlaif policy judging another: each answer is a score in range or an error with a reason", async () => {
    // the rubric must fit the tiny model's 48-token context with the answer
    const base = {
      baseUrl: judged.openai?.baseUrl ?? "",
      model: "judge-policy",
      apiKey: "t",
      maxTokens: 8,
      temperature: 1,
    };
    const items = [
      { prompt: "A", completion: "b" },
      { prompt: "C", completion: "d" },
      { prompt: "E", completion: "f" },
    ];
    for (const mode of ["completions", "chat"] as const) {
      const judge = new Judge({
        ...base,
        mode,
        rubric: "{prompt}{completion} Score:",
        pairwiseRubric: "{prompt}{a}{b}",
      });
      const got = await judge.score(items);
      expect(got).toHaveLength(3);
      for (const r of got) {
        if (r.status === "ok") expect(r.reward).toBeGreaterThanOrEqual(0);
        else expect(r.reason).toMatch(/no score|outside|out of/);
      }
      // random weights answer bytes, not scores
      expect(got.filter((r) => r.status === "error").length).toBeGreaterThan(0);
      const verdicts = await judge.compare([{ prompt: "P", a: "x", b: "y" }]);
      expect(
        verdicts[0]?.status === "ok" || /no preference/.test((verdicts[0] as { reason: string }).reason),
      ).toBe(true);
    }
    // a wrong key is an error naming the 401, not a score
    const locked = new Judge({
      ...base,
      apiKey: "wrong",
      mode: "completions",
      rubric: "{prompt}{completion}",
    });
    expect(await locked.score([items[0] as (typeof items)[0]])).toMatchObject([
      { status: "error", reason: expect.stringMatching(/HTTP 401: Incorrect API key/) },
    ]);
  });
});
