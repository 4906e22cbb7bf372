/**
 * Scorers mixed by weight into one (services/feedback/mixed-scorer.ts, scorerFromSettings in
 * services/feedback/main.ts): the rules and an LLM judge over a real HTTP server speaking the
 * OpenAI completions API, served over gRPC as scorer "composite" with both parts' provenance in
 * its version and model hash; the status rule (any ERROR → ERROR, any ABSTAIN → ABSTAIN, OK only
 * when all are); per-byte rewards with a scalar part on the last byte; which scorers the settings
 * name; and the embedded `rlaif train` cluster scoring with the mix, normalised per scorer.
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  FeedbackService,
  type ScoreItem,
  ScoreStatus,
} from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { defaultConfig, type ServiceSettings } from "../services/core/src/config/settings.js";
import { ConfigError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { COMPOSITE_SCORER_ID, compositeScorer } from "../services/feedback/composite-scorer.js";
import type { ScoreInit } from "../services/feedback/idempotency.js";
import type { ItemScorer } from "../services/feedback/item-scorer.js";
import { JUDGE_SCORER_ID } from "../services/feedback/judge-scorer.js";
import { scorerFromSettings, startFeedbackServer } from "../services/feedback/main.js";
import { MIXED_SCORER_ID, mixedScorer } from "../services/feedback/mixed-scorer.js";
import { RULE_SCORER_ID, RULE_SCORER_VERSION } from "../services/feedback/scorer.js";
import { runToEnd } from "./helpers/resume-runs.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

/**
 * An OpenAI-compatible /v1/completions server: "Score: 9" for a prompt holding "superb", an
 * unparseable answer for one holding "mumble", else "Score: 1 + (length of the prompt mod 8)".
 */
async function openAiJudge(): Promise<{ url: string; calls: () => number; close(): Promise<void> }> {
  let calls = 0;
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      calls++;
      const prompt = String(JSON.parse(body).prompt ?? "");
      const text = prompt.includes("superb")
        ? "Score: 9"
        : prompt.includes("mumble")
          ? "I would rather not say"
          : `Score: ${1 + (prompt.length % 8)}`;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ id: "c", object: "text_completion", model: "m", choices: [{ index: 0, text }] }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    calls: () => calls,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Feedback settings with the judge at `url` and these changes. */
function settings(url: string, changes: Partial<ServiceSettings> = {}): ServiceSettings {
  return { ...defaultConfig().services, judgeUrl: url, judgeModel: "m", judgeTimeoutMs: 10_000, ...changes };
}

/** An in-process scorer answering `answer(item)` for each item. */
function fake(id: string, answer: (item: ScoreItem) => ScoreInit, tokenRewards = false): ItemScorer {
  return {
    info: { scorerId: id, scorerVersion: "7", modelHash: `h-${id}`, deterministic: true, tokenRewards },
    score: (items) => items.map(answer),
  };
}

const item = (completion: string): ScoreItem =>
  ({ prompt: "p", completion, idempotencyKey: "" }) as ScoreItem;

describe("feedback mix", () => {
  let judge: Awaited<ReturnType<typeof openAiJudge>>;
  beforeAll(async () => {
    judge = await openAiJudge();
  });
  afterAll(async () => {
    await judge?.close();
  });

  it("feedback mix - rules and an LLM judge over HTTP combine by weight into scorer composite, served over gRPC with per-byte rewards", async () => {
    const rules = "afinn:1,length(1-3):0.3";
    const scorer = await scorerFromSettings(settings(judge.url, { judgeWeight: 0.5, feedbackRules: rules }));
    const server = await startFeedbackServer({ host: "127.0.0.1", port: 0, scorer });
    const client = createClient(FeedbackService, server.address, { defaultTimeoutMs: 30_000 });
    try {
      const info = await client.getInfo({});
      expect(info.scorerId).toBe(MIXED_SCORER_ID);
      expect(info.scorerVersion).toMatch(new RegExp(`^1:${JUDGE_SCORER_ID}@1\\+${COMPOSITE_SCORER_ID}@`));
      expect(info.tokenRewards).toBe(true);
      expect(info.rewardRange?.min).toBeCloseTo(-1.3, 9);
      expect(info.rewardRange?.max).toBeCloseTo(6, 9);
      const completions = ["a superb good film", "mumble mumble", "bad"];
      const res = await client.score({
        items: completions.map((c, i) => ({
          prompt: "The film was",
          completion: c,
          idempotencyKey: `k${i}`,
        })),
      });
      expect(res.scorerId).toBe(MIXED_SCORER_ID);
      expect(res.modelHash).toBe(info.modelHash);
      const alone = await compositeScorer(rules).score(completions.map(item));
      const [a, b, c] = res.scores;
      // 0.5 × judge 9 + the rules; the judge's share sits on the last byte.
      expect(a?.status).toBe(ScoreStatus.OK);
      expect(a?.reward).toBeCloseTo(4.5 + (alone[0]?.reward ?? Number.NaN), 9);
      const bytes = a?.tokenRewards ?? [];
      expect(bytes).toHaveLength(Buffer.byteLength("a superb good film"));
      expect(bytes.reduce((x, y) => x + y, 0)).toBeCloseTo(a?.reward ?? Number.NaN, 4);
      expect((bytes.at(-1) as number) - ((alone[0]?.tokenRewards ?? []).at(-1) as number)).toBeCloseTo(
        4.5,
        4,
      );
      // The judge could not be parsed: the item is an ERROR naming the judge, not a reward.
      expect(b?.status).toBe(ScoreStatus.ERROR);
      expect(b?.error).toMatch(/^judge: /);
      expect(c?.status).toBe(ScoreStatus.OK);
      // A retried call is answered from the one cache in front of the mix: no new judge request.
      const before = judge.calls();
      const again = await client.score({
        items: [{ prompt: "The film was", completion: completions[0] as string, idempotencyKey: "k0" }],
      });
      expect(again.scores[0]?.reward).toBe(a?.reward);
      expect(judge.calls()).toBe(before);
    } finally {
      client.close();
      await server.shutdown(1000);
    }
    // Another weight is another scorer to a consumer: same id, new model hash.
    const other = await scorerFromSettings(settings(judge.url, { judgeWeight: 0.25, feedbackRules: rules }));
    expect(other.info.scorerId).toBe(MIXED_SCORER_ID);
    expect(other.info.modelHash).not.toBe(scorer.info.modelHash);
  });

  it("feedback mix - status: OK only when every part is; a part's ERROR (or a throw) wins with its reason, then ABSTAIN", async () => {
    const rules = fake(
      "rules",
      (i) => ({
        reward: i.completion.length,
        tokenRewards: [...i.completion].map(() => 1),
        status: ScoreStatus.OK,
      }),
      true,
    );
    const model = fake("model", (i) =>
      i.completion === "e"
        ? { reward: 0, status: ScoreStatus.ERROR, error: "model broke" }
        : i.completion === "a" || i.completion === "ea"
          ? { reward: 0, status: ScoreStatus.ABSTAIN, rationale: "not my domain" }
          : { reward: 2 },
    );
    const judgeAbstains = fake("judge", (i) =>
      i.completion === "ea"
        ? { reward: 0, status: ScoreStatus.ERROR, error: "judge late" }
        : { reward: 1, status: ScoreStatus.OK },
    );
    const mix = mixedScorer([
      { scorer: rules, weight: 1 },
      { scorer: model, weight: -2 },
      { scorer: judgeAbstains, weight: 3 },
    ]);
    const out = await mix.score(["okay", "e", "a", "ea"].map(item));
    // UNSPECIFIED is OK; a scalar part's weighted reward lands on the last byte.
    expect(out[0]).toMatchObject({ status: ScoreStatus.OK, reward: 4 - 4 + 3 });
    expect(out[0]?.tokenRewards).toEqual([1, 1, 1, 1 - 4 + 3]);
    expect(out[1]).toMatchObject({ status: ScoreStatus.ERROR, error: "model: model broke" });
    expect(out[2]).toMatchObject({ status: ScoreStatus.ABSTAIN, rationale: "model: not my domain" });
    expect(out[3]).toMatchObject({ status: ScoreStatus.ERROR, error: "judge: judge late" });
    const throwing: ItemScorer = {
      info: { scorerId: "down" },
      score: () => {
        throw new Error("connection refused");
      },
    };
    const down = await mixedScorer([
      { scorer: rules, weight: 1 },
      { scorer: throwing, weight: 1 },
    ]).score([item("x"), item("y")]);
    expect(down.map((s) => [s.status, s.error])).toEqual([
      [ScoreStatus.ERROR, "down: connection refused"],
      [ScoreStatus.ERROR, "down: connection refused"],
    ]);
  });

  it("feedback mix - settings: a scorer named alone with weight 1 is served as itself, the rules join only when given, weight 0 is refused", async () => {
    expect((await scorerFromSettings(settings(judge.url))).info.scorerId).toBe(JUDGE_SCORER_ID);
    expect((await scorerFromSettings(settings(""))).info.scorerId).toBe(RULE_SCORER_ID);
    const scaled = await scorerFromSettings(settings(judge.url, { judgeWeight: 2 }));
    expect(scaled.info.scorerId).toBe(MIXED_SCORER_ID);
    expect(scaled.info.scorerVersion).toBe(`1:${JUDGE_SCORER_ID}@1`);
    expect(scaled.info.rewardRange).toMatchObject({ min: 0, max: 20 });
    const [s] = await scaled.score([
      { prompt: "a superb", completion: "x", idempotencyKey: "" } as ScoreItem,
    ]);
    expect(s).toMatchObject({ status: ScoreStatus.OK, reward: 18, tokenRewards: [] });
    await expect(scorerFromSettings(settings(judge.url, { judgeWeight: 0 }))).rejects.toThrow(
      /--judge-weight is 0/,
    );
    await expect(scorerFromSettings(settings(judge.url, { judgeWeight: 0 }))).rejects.toBeInstanceOf(
      ConfigError,
    );
  });

  it("feedback mix - the embedded cluster (rlaif train) scores with the mix and normalises per scorer", async () => {
    const config = tinyRunConfig(await writeTinyCheckpoint(4), {
      steps: 2,
      rewardNorm: "per-scorer",
      rewardClip: 2,
    });
    Object.assign(config.services, { judgeUrl: judge.url, judgeModel: "m", feedbackRules: "afinn:1" });
    const dir = await runToEnd(config);
    const saved = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    expect(saved.provenance.feedback.scorers).toEqual([
      { id: MIXED_SCORER_ID, version: `1:${JUDGE_SCORER_ID}@1+${RULE_SCORER_ID}@${RULE_SCORER_VERSION}` },
    ]);
    const lines = readFileSync(join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((m) => Object.keys(m.rewardNormMean))).toEqual([[MIXED_SCORER_ID], [MIXED_SCORER_ID]]);
    for (const m of lines) expect(m.rewardNormStd[MIXED_SCORER_ID]).toBeGreaterThan(0);
  }, 300_000);
});
