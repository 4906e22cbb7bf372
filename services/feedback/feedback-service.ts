/**
 * The built-in AI feedback service: serves an in-process scorer (by default the rule-based
 * AFINN-165 scorer) over rlaif.feedback.v1.FeedbackService with the whole contract of
 * docs/feedback-contract.md: a status per item, provenance, idempotency keys echoed and answered
 * from a cache, and GetInfo. Request validation (1..1024 items, sizes, key length) happens in the
 * shared gRPC layer before `score` runs; this file maps items to scores.
 */
import { FeedbackService, type ScoreItem, ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ValidationError } from "../core/src/errors.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
import { MAX_SCORE_ITEMS } from "../core/src/grpc/rules.js";
import { counter } from "../core/src/ops/metrics.js";
import { IdempotencyCache, type ScoreInit } from "./idempotency.js";
import { type ItemScorer, ruleScorer } from "./item-scorer.js";

/**
 * The handlers of FeedbackService backed by `scorer` (default the rule scorer). Items whose key
 * the cache knows are answered from it; the rest go to the scorer in one batch. Every score
 * echoes its item's key.
 */
export function scorerFeedbackService(
  scorer: ItemScorer = ruleScorer(),
  cache: IdempotencyCache = new IdempotencyCache(),
): ServiceImpl<typeof FeedbackService> {
  const max = scorer.info.maxBatchItems ?? MAX_SCORE_ITEMS;
  return {
    async score(req) {
      if (req.items.length > max) {
        throw new ValidationError(
          "items",
          `has ${req.items.length} items, this scorer takes at most ${max} per call`,
        );
      }
      const out: (ScoreInit | undefined)[] = [];
      const firstByKey = new Map<string, ScoreItem>();
      const misses: number[] = [];
      req.items.forEach((item, i) => {
        const field = `items[${i}].idempotency_key`;
        const key = item.idempotencyKey;
        const earlier = key ? firstByKey.get(key) : undefined;
        if (earlier && (earlier.prompt !== item.prompt || earlier.completion !== item.completion)) {
          throw new ValidationError(field, `"${key}" is used for two different items of this request`);
        }
        if (key) firstByKey.set(key, item);
        const hit = cache.lookup(key, item.prompt, item.completion, field);
        out.push(hit);
        if (!hit) misses.push(i);
      });
      const fresh = misses.length > 0 ? await scorer.score(misses.map((i) => req.items[i] as ScoreItem)) : [];
      if (fresh.length !== misses.length) {
        throw new Error(
          `scorer ${scorer.info.scorerId} returned ${fresh.length} scores for ${misses.length} items`,
        );
      }
      misses.forEach((i, k) => {
        const item = req.items[i] as ScoreItem;
        const s = fresh[k] as ScoreInit;
        cache.store(item.idempotencyKey, item.prompt, item.completion, s);
        out[i] = s;
        counter("feedbackItems").inc({
          status: ScoreStatus[s.status ?? ScoreStatus.UNSPECIFIED].toLowerCase(),
        });
      });
      return {
        scores: out.map((s, i) => ({ ...s, idempotencyKey: (req.items[i] as ScoreItem).idempotencyKey })),
        scorerId: scorer.info.scorerId ?? "",
        scorerVersion: scorer.info.scorerVersion ?? "",
        modelHash: scorer.info.modelHash ?? "",
      };
    },
    getInfo() {
      return scorer.info;
    },
  };
}

/** The handlers of FeedbackService backed by the rule scorer (the built-in feedback). */
export function ruleFeedbackService(): ServiceImpl<typeof FeedbackService> {
  return scorerFeedbackService(ruleScorer());
}

export { type ItemScorer, ruleScorer, type ScorerInfo } from "./item-scorer.js";
export { FeedbackService };
