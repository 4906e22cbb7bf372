/**
 * The LLM judge served as the FeedbackService's scorer (services/feedback/judge-scorer.ts): scores
 * over gRPC against a real rlaif Policy's OpenAI endpoint, ERROR items with the reason for a judge
 * that answers junk, provenance and GetInfo, the idempotency cache, API keys from an env var or a
 * file, and `rlaif serve feedback` refusing bad judge flags with exit 2.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FeedbackService, ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import type { JudgeOptions } from "../services/feedback/judge.js";
import {
  DEFAULT_JUDGE_RUBRIC,
  JUDGE_SCORER_ID,
  type JudgeScorerSettings,
  judgeModelHash,
  judgeOptionsFrom,
  judgeScorer,
} from "../services/feedback/judge-scorer.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { type PolicyServer, startPolicyServer } from "../services/policy/main.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const BIN = join(import.meta.dirname, "..", "bin", "rlaif.js");

/** A judge API that answers every /v1/completions request with `answer`, counting requests. */
async function oneAnswerJudge(answer: string): Promise<{
  url: string;
  calls: { auth: string | undefined }[];
  close(): Promise<void>;
}> {
  const calls: { auth: string | undefined }[] = [];
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      calls.push({ auth: req.headers.authorization });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ choices: [{ index: 0, text: answer }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    calls,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Serves `opts` as a FeedbackService and runs `body` with a client of it. */
async function withJudgeService(
  opts: JudgeOptions,
  body: (client: ReturnType<typeof createClient<typeof FeedbackService>>) => Promise<void>,
): Promise<void> {
  const server = await startFeedbackServer({ host: "127.0.0.1", port: 0, scorer: judgeScorer(opts) });
  const client = createClient(FeedbackService, server.address, { defaultTimeoutMs: 60_000 });
  try {
    await body(client);
  } finally {
    client.close();
    await server.shutdown(1000);
  }
}

const SETTINGS: JudgeScorerSettings = {
  judgeUrl: "http://127.0.0.1:1/v1",
  judgeModel: "m",
  judgeMode: "completions",
  judgeRubricFile: "",
  judgeApiKeyEnv: "",
  judgeApiKeyFile: "",
  judgeTimeoutMs: 5000,
  judgeTemperature: 0,
};

describe("feedback judge scorer against a Policy", () => {
  let judged: PolicyServer;

  beforeAll(async () => {
    judged = await startPolicyServer({
      host: "127.0.0.1",
      port: 0,
      checkpoint: await writeTinyCheckpoint(12),
      backend: "wasm",
      openai: { port: 0, model: "judge-policy", token: "t" },
    });
  });
  afterAll(async () => {
    await judged?.close();
  });

  it("judge scorer - a FeedbackService judged by an rlaif Policy answers each item OK in range or ERROR with a reason", async () => {
    const opts: JudgeOptions = {
      baseUrl: judged.openai?.baseUrl ?? "",
      model: "judge-policy",
      apiKey: "t",
      mode: "completions",
      rubric: "{prompt}{completion} Score:",
      maxTokens: 8,
      temperature: 1,
    };
    await withJudgeService(opts, async (client) => {
      const info = await client.getInfo({});
      expect(info).toMatchObject({ scorerId: JUDGE_SCORER_ID, deterministic: false, tokenRewards: false });
      expect(info.rewardRange).toMatchObject({ min: 0, max: 10 });
      expect(info.modelHash).toBe(judgeModelHash(opts));
      const res = await client.score({
        items: [
          { prompt: "A", completion: "b", idempotencyKey: "k1" },
          { prompt: "C", completion: "d", idempotencyKey: "k2" },
        ],
      });
      expect(res.scorerId).toBe(JUDGE_SCORER_ID);
      expect(res.modelHash).toBe(info.modelHash);
      expect(res.scores.map((s) => s.idempotencyKey)).toEqual(["k1", "k2"]);
      for (const s of res.scores) {
        if (s.status === ScoreStatus.OK) {
          expect(s.reward).toBeGreaterThanOrEqual(0);
          expect(s.reward).toBeLessThanOrEqual(10);
        } else {
          expect(s.status).toBe(ScoreStatus.ERROR);
          expect(s.error).toMatch(/no score|outside|out of/);
        }
      }
    });
  }, 120_000);
});

describe("feedback judge scorer", () => {
  it("judge scorer - a judge answering junk gives ERROR items quoting the answer, never a reward", async () => {
    const judge = await oneAnswerJudge("I like it a lot");
    try {
      const opts: JudgeOptions = {
        baseUrl: judge.url,
        model: "m",
        mode: "completions",
        rubric: DEFAULT_JUDGE_RUBRIC,
      };
      await withJudgeService(opts, async (client) => {
        const res = await client.score({
          items: [
            { prompt: "p", completion: "c" },
            { prompt: "q", completion: "d" },
          ],
        });
        expect(res.scores).toHaveLength(2);
        for (const s of res.scores) {
          expect(s.status).toBe(ScoreStatus.ERROR);
          expect(s.error).toContain("I like it a lot");
          expect(s.reward).toBe(0);
        }
      });
    } finally {
      await judge.close();
    }
  });

  it("judge scorer - a parsed score is the OK reward, and a retried key is answered from the cache", async () => {
    const judge = await oneAnswerJudge("Good.\nScore: 7");
    try {
      const opts: JudgeOptions = {
        baseUrl: judge.url,
        model: "m",
        mode: "completions",
        rubric: DEFAULT_JUDGE_RUBRIC,
      };
      await withJudgeService(opts, async (client) => {
        const info = await client.getInfo({});
        expect(info.deterministic).toBe(true);
        const item = { prompt: "p", completion: "c", idempotencyKey: "same" };
        const first = await client.score({ items: [item] });
        const again = await client.score({ items: [item] });
        expect(first.scores[0]).toMatchObject({ status: ScoreStatus.OK, reward: 7, error: "" });
        expect(again.scores[0]).toMatchObject({ status: ScoreStatus.OK, reward: 7 });
        expect(judge.calls).toHaveLength(1);
      });
    } finally {
      await judge.close();
    }
  });

  it("judge scorer - the API key comes from the named env var or the key file's first line", async () => {
    const judge = await oneAnswerJudge("Score: 3");
    try {
      const fromEnv = judgeOptionsFrom(
        { ...SETTINGS, judgeUrl: judge.url, judgeApiKeyEnv: "JUDGE_KEY_T" },
        {
          JUDGE_KEY_T: "env-key",
        },
      );
      const dir = mkdtempSync(join(tmpdir(), "judge-key-"));
      writeFileSync(join(dir, "key"), "file-key\nignored\n");
      const fromFile = judgeOptionsFrom({
        ...SETTINGS,
        judgeUrl: judge.url,
        judgeApiKeyFile: join(dir, "key"),
      });
      await judgeScorer(fromEnv).score([{ prompt: "p", completion: "c" } as never]);
      await judgeScorer(fromFile).score([{ prompt: "p", completion: "c" } as never]);
      expect(judge.calls.map((c) => c.auth)).toEqual(["Bearer env-key", "Bearer file-key"]);
      expect(() => judgeOptionsFrom({ ...SETTINGS, judgeApiKeyEnv: "JUDGE_KEY_UNSET" }, {})).toThrow(
        /JUDGE_KEY_UNSET is not set/,
      );
      expect(() => judgeOptionsFrom({ ...SETTINGS, judgeModel: "" })).toThrow(ConfigError);
    } finally {
      await judge.close();
    }
  });

  it("judge scorer - model_hash changes with the model, rubric, mode or temperature", () => {
    const base = {
      model: "m",
      rubric: "r {prompt} {completion}",
      mode: "completions" as const,
      temperature: 0,
    };
    const h = judgeModelHash(base);
    expect(judgeModelHash({ ...base, model: "n" })).not.toBe(h);
    expect(judgeModelHash({ ...base, rubric: "s {prompt} {completion}" })).not.toBe(h);
    expect(judgeModelHash({ ...base, mode: "chat" })).not.toBe(h);
    expect(judgeModelHash({ ...base, temperature: 0.5 })).not.toBe(h);
    expect(judgeModelHash(base)).toBe(h);
  });

  it("judge scorer - serve feedback with bad judge flags exits 2 naming the flag", () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [BIN, "serve", "feedback", "--port", "0", ...args], {
        encoding: "utf8",
        timeout: 60_000,
        env: { ...process.env, JUDGE_KEY_UNSET_T: "" },
      });
    const url = ["--judge-url", "http://127.0.0.1:1/v1"];
    // Each bad command line, and what its message must name.
    const cases: [string[], string][] = [
      [url, "--judge-model"],
      [[...url, "--judge-model", "m", "--judge-mode", "embed"], "judge-mode"],
      [[...url, "--judge-model", "m", "--judge-api-key-env", "JUDGE_KEY_UNSET_T"], "JUDGE_KEY_UNSET_T"],
      [["--judge-url", "not a url", "--judge-model", "m"], "judge base URL"],
    ];
    for (const [args, named] of cases) {
      const r = run(...args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr).toContain(named);
    }
  }, 120_000);
});
