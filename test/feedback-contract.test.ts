/**
 * The feedback contract (docs/feedback-contract.md) on the built-in scorer's gRPC server: GetInfo,
 * statuses, idempotency keys echoed and answered from the cache, a key reused for other text
 * refused; the response rules a caller applies to any scorer's answer; and each status end to end
 * through an embedded run against a scorer that abstains on some samples and fails on others.
 */
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import {
  FeedbackService,
  ScoreResponseSchema,
  ScoreStatus,
} from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { RpcError, ScorerResponseError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import type { RunningServer } from "../services/core/src/grpc/server.js";
import { type ItemScorer, ruleScorer } from "../services/feedback/feedback-service.js";
import { IdempotencyCache } from "../services/feedback/idempotency.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { RULE_SCORER_ID, RULE_SCORER_VERSION, scoreCompletion } from "../services/feedback/scorer.js";
import { checkScores, scoreKey } from "../services/rollout/collect.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const HOST = "127.0.0.1";

/** The RpcError a call fails with (or a failed expectation when it succeeds). */
async function rpcError(call: Promise<unknown>): Promise<RpcError> {
  const err = await call.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RpcError);
  return err as RpcError;
}

describe("feedback contract", () => {
  let server: RunningServer;
  let client: ReturnType<typeof createClient<typeof FeedbackService>>;
  beforeAll(async () => {
    server = await startFeedbackServer({ host: HOST, port: 0 });
    client = createClient(FeedbackService, server.address, { defaultTimeoutMs: 30_000 });
  });
  afterAll(async () => {
    client?.close();
    await server?.shutdown(1000);
  });

  it("feedback contract - GetInfo says what the built-in scorer is: deterministic, rewards in [-1, 1], 1024 items a call", async () => {
    const info = await client.getInfo({});
    expect(info.scorerId).toBe(RULE_SCORER_ID);
    expect(info.scorerVersion).toBe(RULE_SCORER_VERSION);
    expect(info.deterministic).toBe(true);
    expect(info.rewardRange).toMatchObject({ min: -1, max: 1 });
    expect(info.maxBatchItems).toBe(1024);
    expect(info.tokenRewards).toBe(true);
    expect(info.description).toMatch(/AFINN/);
  });

  it("feedback contract - every built-in score is OK with the rule's reward, and echoes its item's key", async () => {
    const res = await client.score({
      items: [
        { prompt: "p", completion: "a good day", idempotencyKey: "k1" },
        { prompt: "p", completion: "awful", idempotencyKey: "" },
      ],
    });
    expect(res.scores.map((s) => s.status)).toEqual([ScoreStatus.OK, ScoreStatus.OK]);
    expect(res.scores.map((s) => s.idempotencyKey)).toEqual(["k1", ""]);
    expect(res.scores[0]?.reward).toBeCloseTo(scoreCompletion("a good day").reward, 6);
    expect(res.scores[1]?.reward).toBeLessThan(0);
    expect(res.modelHash).toBe("");
  });

  it("feedback contract - the same key and text get the same score; the same key with other text is INVALID_ARGUMENT", async () => {
    const item = { prompt: "q", completion: "so happy", idempotencyKey: "run.1.0.0" };
    const a = await client.score({ items: [item] });
    const b = await client.score({ items: [item] });
    expect(b.scores[0]).toEqual(a.scores[0]);
    const reused = await rpcError(client.score({ items: [{ ...item, completion: "so sad" }] }));
    expect(reused.code).toBe(status.INVALID_ARGUMENT);
    expect(reused.message).toMatch(/items\[0\]\.idempotency_key.*"run\.1\.0\.0".*different/);
    const twice = await rpcError(
      client.score({
        items: [
          { prompt: "x", completion: "one", idempotencyKey: "dup" },
          { prompt: "x", completion: "two", idempotencyKey: "dup" },
        ],
      }),
    );
    expect(twice.code).toBe(status.INVALID_ARGUMENT);
    expect(twice.message).toMatch(/items\[1\]\.idempotency_key/);
  });

  it("feedback contract - a key longer than 256 bytes is refused naming the field", async () => {
    const err = await rpcError(
      client.score({ items: [{ prompt: "p", completion: "c", idempotencyKey: "k".repeat(257) }] }),
    );
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.message).toMatch(/items\[0\]\.idempotency_key/);
  });

  it("feedback contract - a retried non-deterministic score is answered from the cache; ERROR is not cached", async () => {
    let calls = 0;
    const flaky: ItemScorer = {
      info: { scorerId: "flaky", maxBatchItems: 4 },
      score: (items) =>
        items.map(() => {
          calls++;
          return calls === 1
            ? { status: ScoreStatus.ERROR, error: "model timed out" }
            : { status: ScoreStatus.OK, reward: calls };
        }),
    };
    const own = await startFeedbackServer({ host: HOST, port: 0, scorer: flaky });
    const c = createClient(FeedbackService, own.address, { defaultTimeoutMs: 30_000 });
    try {
      const items = [{ prompt: "p", completion: "c", idempotencyKey: "k" }];
      expect((await c.score({ items })).scores[0]?.status).toBe(ScoreStatus.ERROR);
      const second = await c.score({ items });
      expect(second.scores[0]).toMatchObject({ status: ScoreStatus.OK, reward: 2 });
      expect((await c.score({ items })).scores[0]?.reward).toBe(2); // not 3: from the cache
      expect(calls).toBe(2);
      const over = await rpcError(c.score({ items: Array.from({ length: 5 }, () => ({ completion: "x" })) }));
      expect(over.code).toBe(status.INVALID_ARGUMENT);
      expect(over.message).toMatch(/items: has 5 items, this scorer takes at most 4/);
    } finally {
      c.close();
      await own.shutdown(1000);
    }
  });

  it("feedback contract - the cache forgets its oldest key past its capacity", () => {
    const cache = new IdempotencyCache(2);
    cache.store("a", "p", "1", { reward: 1 });
    cache.store("b", "p", "2", { reward: 2 });
    expect(cache.lookup("a", "p", "1", "f")).toMatchObject({ reward: 1 }); // refreshes a
    cache.store("c", "p", "3", { reward: 3 });
    expect(cache.size).toBe(2);
    expect(cache.lookup("b", "p", "2", "f")).toBeUndefined();
    expect(cache.lookup("a", "p", "1", "f")).toMatchObject({ reward: 1 });
  });
});

describe("feedback contract rules", () => {
  const sent = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ completion: "ok", idempotencyKey: `k${i}` }));
  const answer = (scores: object[]) =>
    create(ScoreResponseSchema, { scorerId: "judge-x", scorerVersion: "3", scores });

  it("feedback contract rules - an OK (or unset) status needs a finite reward; ABSTAIN and ERROR rewards are not read", () => {
    expect(() => checkScores(answer([{ reward: 0.5, status: ScoreStatus.OK }]), sent(1))).not.toThrow();
    expect(() => checkScores(answer([{ reward: 0.5 }]), sent(1))).not.toThrow();
    expect(() => checkScores(answer([{ reward: Number.NaN, status: ScoreStatus.OK }]), sent(1))).toThrow(
      /scorer "judge-x" v3 answered badly: scores\[0\]\.reward: must be finite, got NaN/,
    );
    expect(() => checkScores(answer([{ reward: Number.POSITIVE_INFINITY }]), sent(1))).toThrow(
      ScorerResponseError,
    );
    expect(() =>
      checkScores(answer([{ reward: 1, tokenRewards: [0, Number.NEGATIVE_INFINITY] }]), sent(1)),
    ).toThrow(/scores\[0\]\.token_rewards\[1\]: must be finite/);
    expect(() =>
      checkScores(answer([{ reward: Number.NaN, tokenRewards: [1], status: ScoreStatus.ABSTAIN }]), sent(1)),
    ).not.toThrow();
  });

  it("feedback contract rules - ERROR needs a reason, an unknown status and the wrong count are refused naming the scorer", () => {
    expect(() => checkScores(answer([{ status: ScoreStatus.ERROR }]), sent(1))).toThrow(
      /scorer "judge-x" v3 answered badly: scores\[0\]\.error: must say why/,
    );
    expect(() =>
      checkScores(answer([{ status: ScoreStatus.ERROR, error: "unparseable" }]), sent(1)),
    ).not.toThrow();
    expect(() => checkScores(answer([{ status: 7 }]), sent(1))).toThrow(
      /scores\[0\]\.status: must be one of/,
    );
    expect(() => checkScores(answer([{ reward: 1 }]), sent(2))).toThrow(
      /scorer "judge-x" v3 answered badly: scores: must have exactly 2 items, got 1/,
    );
  });

  it("feedback contract rules - an echoed key must be its item's; a scorer that echoes none passes", () => {
    expect(() =>
      checkScores(answer([{ reward: 1, idempotencyKey: "k0" }, { reward: 1 }]), sent(2)),
    ).not.toThrow();
    expect(() =>
      checkScores(
        answer([
          { reward: 1, idempotencyKey: "k1" },
          { reward: 1, idempotencyKey: "k0" },
        ]),
        sent(2),
      ),
    ).toThrow(/scores\[0\]\.idempotency_key: is "k1", but item 0 was sent with "k0"/);
  });

  it("feedback contract rules - the Rollout's key names the trajectory and changes with the text", () => {
    const k = scoreKey("run.3.1.0", "p", "a");
    expect(k).toMatch(/^run\.3\.1\.0~[0-9a-f]{16}$/);
    expect(scoreKey("run.3.1.0", "p", "a")).toBe(k);
    expect(scoreKey("run.3.1.0", "p", "b")).not.toBe(k);
    expect(scoreKey("run.3.1.0", "pa", "")).not.toBe(scoreKey("run.3.1.0", "p", "a"));
  });
});

describe("feedback contract (embedded run)", () => {
  let feedback: RunningServer;
  let cluster: EmbeddedCluster;
  /** Abstains on sample 0 of prompt 0, fails on sample 1 of prompt 1 (by the key's trajectory id). */
  const choosy: ItemScorer = {
    info: { scorerId: "choosy", scorerVersion: "1", modelHash: "sha256:abc", maxBatchItems: 64 },
    score: (items) => {
      const rule = ruleScorer();
      return items.map((item, i) => {
        const id = item.idempotencyKey.split("~")[0] as string;
        const [, , prompt, sample] = id.split(".");
        if (prompt === "0" && sample === "0")
          return { status: ScoreStatus.ABSTAIN, rationale: "not my language" };
        if (prompt === "1" && sample === "1")
          return { status: ScoreStatus.ERROR, error: "judge answer unparseable" };
        return (rule.score([item]) as object[])[0] ?? { reward: i };
      });
    },
  };
  beforeAll(async () => {
    feedback = await startFeedbackServer({ host: HOST, port: 0, scorer: choosy });
    const config = tinyRunConfig(await writeTinyCheckpoint());
    config.services.feedbackAddress = feedback.address;
    cluster = await startEmbeddedCluster(config);
  }, 60_000);
  afterAll(async () => {
    await cluster?.close();
    await feedback?.shutdown(1000);
  });

  it("feedback contract (embedded run) - ABSTAIN and ERROR samples are excluded and counted by cause, the run completes", async () => {
    const config = tinyRunConfig("unused", { steps: 2 });
    const run = await cluster.optimizer.runs.start(config.run);
    const summary = await run.done;
    expect(run.error).toBe("");
    expect(summary).not.toBeNull();
    // 4 prompts × 2 samples a step: one abstained, one failed, six trained on
    expect(run.driver.history).toHaveLength(2);
    for (const m of run.driver.history) {
      expect(m.excludedByCause).toEqual({ abstained: 1, scorer_error: 1 });
      expect(m.excluded).toBe(2);
      expect(m.trajectories).toBe(6);
      expect(Number.isFinite(m.meanReward)).toBe(true);
    }
    expect(summary?.abstained).toBe(2);
    expect(summary?.scorerErrors).toBe(2);
    expect(summary?.trajectories).toBe(12);
  });
});
