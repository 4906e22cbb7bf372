/**
 * Weighted rule scorers (services/feedback/composite-scorer.ts, `--feedback-rules`): parsing with
 * clear errors, the weighted sum, per-byte rewards that stay where a local rule earned them and
 * sum to the reward, and the composite served over gRPC with its provenance and range.
 */
import { describe, expect, it } from "vitest";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { FeedbackService, ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { ConfigError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import {
  COMPOSITE_SCORER_ID,
  compositeScorer,
  parseFeedbackRules,
} from "../services/feedback/composite-scorer.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { RULE_SCORER_ID, scoreCompletion } from "../services/feedback/scorer.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

/** The one score of `text` under `spec`. */
async function scoreOf(spec: string, text: string) {
  const [s] = await compositeScorer(spec).score([
    { prompt: "p", completion: text, idempotencyKey: "", $typeName: "rlaif.feedback.v1.ScoreItem" },
  ]);
  return s as { reward: number; tokenRewards: number[]; rationale: string; status: ScoreStatus };
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

describe("feedback rules", () => {
  it("feedback rules - empty or afinn:1 is the built-in scorer under its own id", () => {
    expect(compositeScorer("").info.scorerId).toBe(RULE_SCORER_ID);
    expect(compositeScorer(" afinn:1 ").info.scorerId).toBe(RULE_SCORER_ID);
    const mix = compositeScorer("afinn:1,length(3-10):0.5");
    expect(mix.info.scorerId).toBe(COMPOSITE_SCORER_ID);
    expect(mix.info.modelHash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(compositeScorer("afinn:1, length(3-10):0.5").info.modelHash).toBe(mix.info.modelHash);
    expect(compositeScorer("afinn:1,length(3-10):0.6").info.modelHash).not.toBe(mix.info.modelHash);
    // afinn ∈ [−1, 1] × 1, length ∈ [−1, 0] × 0.5, regex ∈ [0, 1] × −2
    expect(compositeScorer("afinn:1,length(3-10):0.5,regex(x):-2").info.rewardRange).toEqual({
      min: -3.5,
      max: 1,
    });
  });

  it("feedback rules - a bad setting is a ConfigError that says what to fix", () => {
    const bad: [string, RegExp][] = [
      ["afinn", /afinn needs a weight, e\.g\. "afinn:0\.5"/],
      ["sentiment:1", /unknown rule "sentiment"; the rules are afinn/],
      ["length(9-3):1", /length\(9-3\) must be length\(MIN-MAX\)/],
      ["length:1", /length takes \(MIN-MAX\)/],
      ["regex([a-):1", /regex\(\[a-\) is not a valid regular expression/],
      ["keyword(good|):1", /keyword\(good\|\) must list words/],
      ["regex((a):1", /unbalanced "\(" after regex/],
      ["afinn:x", /afinn needs a weight/],
    ];
    for (const [spec, message] of bad) {
      expect(() => parseFeedbackRules(spec), spec).toThrow(ConfigError);
      expect(() => parseFeedbackRules(spec), spec).toThrow(message);
    }
    // a regex may hold commas and colons inside its parentheses
    expect(parseFeedbackRules("regex(a{1,3}:b):0.5,afinn:1").map((r) => r.weight)).toEqual([0.5, 1]);
  });

  it("feedback rules - the reward is the weighted sum of the rules and the per-byte rewards sum to it", async () => {
    const text = "a good day, a good friend";
    const s = await scoreOf("afinn:1,length(2-3):0.5,keyword(friend):2", text);
    const afinn = scoreCompletion(text).reward;
    const length = -Math.min(1, (6 - 3) / 3); // 6 words, above 3
    const keyword = Math.tanh(1);
    expect(s.status).toBe(ScoreStatus.OK);
    expect(s.reward).toBeCloseTo(afinn + 0.5 * length + 2 * keyword, 9);
    expect(s.tokenRewards).toHaveLength(Buffer.byteLength(text));
    expect(sum(s.tokenRewards)).toBeCloseTo(s.reward, 9);
    expect(s.rationale).toMatch(/keyword\(friend\)×2: 0\.762 \(1 keyword\(s\)\)/);
  });

  it("feedback rules - keyword and regex rewards sit on the bytes that earned them", async () => {
    const k = await scoreOf("keyword(kind):1", "so kind, kind");
    // "so kind" ends at byte 7, "kind" again at byte 13: tanh(1) and tanh(2) − tanh(1)
    expect(k.tokenRewards[6]).toBeCloseTo(Math.tanh(1), 9);
    expect(k.tokenRewards[12]).toBeCloseTo(Math.tanh(2) - Math.tanh(1), 9);
    expect(sum(k.tokenRewards.filter((_, i) => i !== 6 && i !== 12))).toBe(0);
    const r = await scoreOf("regex(\\d+):-1", "call 555 now");
    expect(r.reward).toBe(-1);
    expect(r.tokenRewards[7]).toBe(-1); // last byte of "555"
    expect((await scoreOf("regex(\\d+):-1", "no digits")).reward).toBe(0);
  });

  it("feedback rules - repetition and length are global: their reward goes on the last byte", async () => {
    const s = await scoreOf("repetition:1", "go go go go");
    expect(s.reward).toBeLessThan(0);
    expect(s.tokenRewards.at(-1)).toBe(s.reward);
    expect((await scoreOf("length(1-5):1", "")).tokenRewards).toEqual([]);
    expect((await scoreOf("length(1-5):1", "")).reward).toBe(-1);
  });

  it("feedback rules - a composite is served with the contract: GetInfo says what it is", async () => {
    const server = await startFeedbackServer({
      host: "127.0.0.1",
      port: 0,
      scorer: compositeScorer("afinn:1,repetition:0.5"),
    });
    const client = createClient(FeedbackService, server.address, { defaultTimeoutMs: 30_000 });
    try {
      const info = await client.getInfo({});
      expect(info).toMatchObject({ scorerId: COMPOSITE_SCORER_ID, deterministic: true, maxBatchItems: 1024 });
      expect(info.description).toBe("weighted rules afinn:1,repetition:0.5");
      const res = await client.score({
        items: [{ prompt: "p", completion: "good good good", idempotencyKey: "k" }],
      });
      expect(res.scorerId).toBe(COMPOSITE_SCORER_ID);
      expect(res.modelHash).toBe(info.modelHash);
      expect(res.scores[0]?.idempotencyKey).toBe("k");
      expect(res.scores[0]?.reward).toBeLessThan(scoreCompletion("good good good").reward);
    } finally {
      client.close();
      await server.shutdown(1000);
    }
  });

  it("feedback rules - services.feedbackRules makes the embedded cluster's built-in Feedback that mix", async () => {
    const config = tinyRunConfig(await writeTinyCheckpoint());
    config.services.feedbackRules = "afinn:1,length(2-6):0.5";
    const cluster = await startEmbeddedCluster(config);
    const rollout = createClient(RolloutService, cluster.rollout.server.address, {
      defaultTimeoutMs: 30_000,
    });
    try {
      const res = await rollout.collect({
        prompts: ["I think"],
        samplesPerPrompt: 2,
        sampling: { maxNewTokens: 6 },
      });
      expect(res.trajectories).toHaveLength(2);
      const hash = compositeScorer("afinn:1,length(2-6):0.5").info.modelHash;
      for (const t of res.trajectories) {
        expect(t.scorerId).toBe(COMPOSITE_SCORER_ID);
        expect(t.scorerModelHash).toBe(hash);
        expect(t.scoreStatus).toBe(ScoreStatus.OK);
        expect(t.rationale).toMatch(/^afinn×1: .*; length\(2-6\)×0\.5: /);
      }
    } finally {
      rollout.close();
      await cluster.close();
    }
  });
});
