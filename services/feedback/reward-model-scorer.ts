/**
 * A learned reward model (core/src/model/reward-model.ts) as an in-process scorer of the
 * Feedback server: every item OK with the model's scalar reward, provenance with the model's
 * hash, deterministic (a frozen model whose item's features do not depend on its batch).
 */
import { ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import type { BackendName } from "../core/src/model/backend.js";
import { startBackend } from "../core/src/model/backend.js";
import { loadRewardModel, type RewardModel, RM_FORMAT_VERSION } from "../core/src/model/reward-model.js";
import type { ItemScorer } from "./item-scorer.js";

/** Scorer id in ScoreResponse.scorer_id. */
export const REWARD_MODEL_SCORER_ID = "reward-model";
/**
 * Items per Score call: one call's features are computed in one go, and 256 rows of the default
 * GPT-2 take about two seconds on two cores, well inside a feedback deadline.
 */
export const REWARD_MODEL_MAX_BATCH = 256;

/** The reward model as an ItemScorer (its `model` kept for the caller to dispose). */
export function rewardModelItemScorer(model: RewardModel): ItemScorer {
  const { config } = model;
  return {
    info: {
      scorerId: REWARD_MODEL_SCORER_ID,
      scorerVersion: `${RM_FORMAT_VERSION}`,
      modelHash: config.hash,
      description: `Bradley–Terry reward model on ${config.backbone.kind} backbone ${config.backbone.path}, trained on ${config.labels.pairs} pairs labelled by ${config.labels.labellers.map((l) => l.id).join(", ")}`,
      deterministic: true,
      maxBatchItems: REWARD_MODEL_MAX_BATCH,
      tokenRewards: false,
    },
    score: (items) =>
      model.rewards(items).map((reward) => ({
        reward,
        tokenRewards: [],
        rationale: `reward model ${config.hash.slice(0, 12)}: r = ${reward.toFixed(4)}`,
        status: ScoreStatus.OK,
      })),
  };
}

/** Loads the reward model in `dir` (starting the tfjs backend) as an ItemScorer. */
export async function rewardModelScorer(
  dir: string,
  backend: "auto" | BackendName = "auto",
): Promise<ItemScorer> {
  await startBackend(backend);
  return rewardModelItemScorer(await loadRewardModel(dir));
}
