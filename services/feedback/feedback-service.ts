/**
 * The built-in AI feedback service: serves the rule-based AFINN-165 scorer over
 * rlaif.feedback.v1.FeedbackService. Request validation (1..1024 items, sizes) happens in the
 * shared gRPC layer before `score` runs; this file only maps items to scores.
 */
import { FeedbackService } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
import { RULE_SCORER_ID, RULE_SCORER_VERSION, scoreCompletion } from "./scorer.js";

/** The handlers of FeedbackService backed by the rule scorer. */
export function ruleFeedbackService(): ServiceImpl<typeof FeedbackService> {
  return {
    score(req) {
      return {
        scores: req.items.map((item) => {
          const s = scoreCompletion(item.completion);
          return { reward: s.reward, tokenRewards: s.byteRewards, rationale: s.rationale };
        }),
        scorerId: RULE_SCORER_ID,
        scorerVersion: RULE_SCORER_VERSION,
      };
    },
  };
}

export { FeedbackService };
