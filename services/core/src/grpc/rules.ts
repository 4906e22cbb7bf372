/**
 * The validation rules of the whole public API, one object per request message, so every limit a
 * client can hit is readable in one file and matches the comments in proto/. The adapter applies
 * `REQUEST_RULES` to every incoming request before a handler sees it; handlers only check what
 * depends on their state (e.g. a prompt fitting the loaded model's context).
 *
 * The limits mirror the config table (services/core/src/config/settings.ts) where both exist, so
 * a run started over gRPC accepts what `rlaif train` accepts.
 */
import type { MessageShape } from "@bufbuild/protobuf";
import { RunConfigSchema, SamplingParamsSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import {
  type Score,
  ScoreItemSchema,
  ScoreRequestSchema,
  ScoreResponseSchema,
  ScoreSchema,
  ScoreStatus,
  ScoreStatusSchema,
} from "../../gen/rlaif/feedback/v1/feedback_pb.js";
import {
  CancelRunRequestSchema,
  CheckpointRequestSchema,
  GetStatusRequestSchema,
  ListRunsRequestSchema,
  PauseRunRequestSchema,
  StartRunRequestSchema,
  UnpauseRunRequestSchema,
  WatchMetricsRequestSchema,
} from "../../gen/rlaif/optimizer/v1/optimizer_pb.js";
import {
  GenerateRequestSchema,
  GenerateStreamRequestSchema,
  LogprobsRequestSchema,
  type ScoredSequence,
  ScoredSequenceSchema,
  WeightsSelectorSchema,
} from "../../gen/rlaif/policy/v1/policy_pb.js";
import { CollectRequestSchema } from "../../gen/rlaif/rollout/v1/rollout_pb.js";
import { fieldValue } from "../config/run-config.js";
import { RUN_SETTINGS, type RunSettings, settingProblem } from "../config/settings.js";
import {
  check,
  definedEnum,
  defineRules,
  each,
  eachString,
  exactItems,
  max,
  maxBytes,
  maxItems,
  minItems,
  nested,
  nonEmpty,
  pattern,
  type Rule,
  type RuleMap,
  type RuleSet,
  required,
} from "./validation.js";

/**
 * Largest vocabulary a wire message may address (2²⁰, above every released tokenizer's, e.g.
 * 151,936 for Qwen2 or 256,000 for Gemma). The Policy checks ids against its own model's
 * vocabulary; this bound only refuses absurd ids before any model sees them.
 */
export const MAX_VOCAB_SIZE = 1 << 20;
/** Largest prompt, in UTF-8 bytes (= byte tokens); far above any bundled model's context. */
export const MAX_PROMPT_BYTES = 4096;
/** Largest prompt or completion text a scorer accepts, in UTF-8 bytes. */
export const MAX_SCORED_TEXT_BYTES = 16_384;
/** Most prompts in one Generate or Collect call. */
export const MAX_BATCH_PROMPTS = 256;
/** Most items in one Score call. */
export const MAX_SCORE_ITEMS = 1024;
/** Longest idempotency key of a scored item, in UTF-8 bytes (a trajectory id is far shorter). */
export const MAX_IDEMPOTENCY_KEY_BYTES = 256;
/** Longest error reason of a SCORE_STATUS_ERROR score, in UTF-8 bytes. */
export const MAX_SCORE_ERROR_BYTES = 4096;
/** Most token ids in one prompt or completion of a Logprobs call. */
export const MAX_SEQUENCE_TOKENS = 4096;
/** Most stop sequences in one SamplingParams. */
export const MAX_STOP_SEQUENCES = 16;
/** Longest stop sequence, in UTF-8 bytes (= byte tokens). */
export const MAX_STOP_BYTES = 128;

const runId = [pattern(/^[A-Za-z0-9_-]{0,64}$/, "letters, digits, '-' or '_', at most 64")];
const prompt = [nonEmpty(), maxBytes(MAX_PROMPT_BYTES)];
const prompts = [minItems(1), maxItems(MAX_BATCH_PROMPTS), eachString(...prompt)];
const tokenId = check<number>(
  (t) => t < MAX_VOCAB_SIZE,
  (t) => `must be a token id below ${MAX_VOCAB_SIZE}, got ${t}`,
);
const tokens = [maxItems(MAX_SEQUENCE_TOKENS), each(tokenId)];

/** A rule that applies a run setting's schema check to a proto field's value. */
function settingRule(key: keyof RunSettings): Rule<unknown> {
  const s = RUN_SETTINGS.find((x) => x.key === key);
  if (!s) throw new TypeError(`no run setting ${key}`);
  return (raw) => {
    const value = fieldValue(s, raw);
    if (value === undefined) return undefined;
    if (s.protoEnum && typeof value === "number") {
      return { at: "", reason: `must be one of ${s.oneOf?.join(", ")}, got ${value}` };
    }
    return settingProblem(s, value);
  };
}

/**
 * Sampling parameters of Generate, GenerateStream and Collect: the same bounds as a run's
 * sampling settings (and a seed bounded like the run's seed: 0..2³²−1, refused above, never cut).
 */
export const samplingRules = defineRules(SamplingParamsSchema, {
  maxNewTokens: [settingRule("maxNewTokens")],
  temperature: [settingRule("temperature")],
  topK: [settingRule("topK")],
  topP: [settingRule("topP")],
  seed: [settingRule("seed")],
  stop: [maxItems(MAX_STOP_SEQUENCES), eachString(nonEmpty(), maxBytes(MAX_STOP_BYTES))],
});

/** Policy.Generate: a bounded batch of non-empty prompts. */
export const generateRequestRules = defineRules(GenerateRequestSchema, {
  prompts,
  samplesPerPrompt: [max(64)],
  sampling: [nested(samplingRules)],
});

/** Policy.GenerateStream: one non-empty prompt. */
export const generateStreamRequestRules = defineRules(GenerateStreamRequestSchema, {
  prompt,
  sampling: [nested(samplingRules)],
});

/**
 * One sequence of a Logprobs call. It must have something to score; an empty completion alone is
 * allowed (a sample cut off at the context limit has none, and its log-probs are simply empty).
 */
export const scoredSequenceRules = defineRules(ScoredSequenceSchema, {
  prompt: [maxBytes(MAX_PROMPT_BYTES)],
  completion: [maxBytes(MAX_SCORED_TEXT_BYTES)],
  promptTokens: tokens,
  completionTokens: tokens,
});

const hasContent = check<ScoredSequence>(
  (s) => s.prompt !== "" || s.promptTokens.length > 0 || s.completion !== "" || s.completionTokens.length > 0,
  "must have a prompt or a completion, as text or token ids",
);

/** Policy.Logprobs: 1..256 sequences of valid token ids, and a known weights selector. */
export const logprobsRequestRules = defineRules(LogprobsRequestSchema, {
  sequences: [minItems(1), maxItems(MAX_BATCH_PROMPTS), each(hasContent, nested(scoredSequenceRules))],
  weights: [definedEnum(WeightsSelectorSchema)],
});

/** One item a scorer is asked about. */
export const scoreItemRules = defineRules(ScoreItemSchema, {
  prompt: [maxBytes(MAX_SCORED_TEXT_BYTES)],
  completion: [maxBytes(MAX_SCORED_TEXT_BYTES)],
  idempotencyKey: [maxBytes(MAX_IDEMPOTENCY_KEY_BYTES)],
});

/** Feedback.Score: 1..1024 items. */
export const scoreRequestRules = defineRules(ScoreRequestSchema, {
  items: [minItems(1), maxItems(MAX_SCORE_ITEMS), each(nested(scoreItemRules))],
});

/** Rollout.Collect: like Generate (the same prompts go to the Policy). */
export const collectRequestRules = defineRules(CollectRequestSchema, {
  prompts,
  samplesPerPrompt: [max(64)],
  sampling: [nested(samplingRules)],
});

/**
 * A run's configuration: every field that the settings schema maps is checked by the schema's own
 * check (config/settings.ts), so `StartRun` refuses exactly what `rlaif train`'s flags and config
 * file refuse, with the same reason. The sampling fields a run does not use are refused rather
 * than silently ignored.
 */
export const runConfigRules = defineRules(RunConfigSchema, {
  ...Object.fromEntries(RUN_SETTINGS.map((s) => [s.proto, [settingRule(s.key)]])),
  "sampling.seed": [check(() => false, "must be unset in a run: its samples are seeded from config.seed")],
  "sampling.ignoreEos": [
    check((v) => !v, "must be unset in a run: completions end at the end-of-sequence token"),
  ],
  "sampling.stop": [
    check((v) => v.length === 0, "must be empty in a run: stop sequences are not part of a run's settings"),
  ],
} as RuleMap<MessageShape<typeof RunConfigSchema>>);

/** Optimizer.StartRun: a config is required (an empty one is never what a caller meant). */
export const startRunRequestRules = defineRules(StartRunRequestSchema, {
  config: [required(), nested(runConfigRules)],
  runId,
});

/** Optimizer.GetStatus. */
export const getStatusRequestRules = defineRules(GetStatusRequestSchema, { runId });
/** Optimizer.WatchMetrics. */
export const watchMetricsRequestRules = defineRules(WatchMetricsRequestSchema, {
  runId,
  fromStep: [max(100_000)],
});
/** Optimizer.Checkpoint. */
export const checkpointRequestRules = defineRules(CheckpointRequestSchema, { runId });
/** Optimizer.PauseRun. */
export const pauseRunRequestRules = defineRules(PauseRunRequestSchema, { runId });
/** Optimizer.UnpauseRun. */
export const unpauseRunRequestRules = defineRules(UnpauseRunRequestSchema, { runId });
/** Optimizer.CancelRun. */
export const cancelRunRequestRules = defineRules(CancelRunRequestSchema, { runId });
/** Optimizer.ListRuns: pages of at most 1000 runs; the token is the one the previous page gave. */
export const listRunsRequestRules = defineRules(ListRunsRequestSchema, {
  pageSize: [max(1000)],
  pageToken: [pattern(/^[0-9]{0,10}$/, "the next_page_token of the previous page")],
});

/** Every request rule set; the adapter picks the one whose message type matches a method's input. */
export const REQUEST_RULES: readonly RuleSet[] = [
  generateRequestRules,
  generateStreamRequestRules,
  logprobsRequestRules,
  scoreRequestRules,
  collectRequestRules,
  startRunRequestRules,
  getStatusRequestRules,
  watchMetricsRequestRules,
  checkpointRequestRules,
  pauseRunRequestRules,
  unpauseRunRequestRules,
  cancelRunRequestRules,
  listRunsRequestRules,
];

/** Whether a score is trained on: OK, or UNSPECIFIED from a scorer written before statuses. */
export function isOkScore(s: Pick<Score, "status">): boolean {
  return s.status === ScoreStatus.OK || s.status === ScoreStatus.UNSPECIFIED;
}

/**
 * The status rules of one score (docs/feedback-contract.md#statuses): an OK score has a finite
 * reward and finite per-token rewards (never a NaN passed on as a reward); an ERROR names its
 * reason; ABSTAIN and ERROR rewards are ignored, so they are not checked.
 */
const statusConsistent: Rule<Score> = (s) => {
  if (isOkScore(s)) {
    if (!Number.isFinite(s.reward)) return { at: ".reward", reason: `must be finite, got ${s.reward}` };
    const bad = s.tokenRewards.findIndex((r) => !Number.isFinite(r));
    if (bad >= 0)
      return { at: `.token_rewards[${bad}]`, reason: `must be finite, got ${s.tokenRewards[bad]}` };
  } else if (s.status === ScoreStatus.ERROR && s.error === "") {
    return { at: ".error", reason: "must say why when the status is SCORE_STATUS_ERROR" };
  }
  return undefined;
};

/** One score of a scorer's answer: a known status, consistent with its reward and reason. */
export const scoreRules = defineRules(ScoreSchema, {
  status: [definedEnum(ScoreStatusSchema)],
  error: [maxBytes(MAX_SCORE_ERROR_BYTES)],
  idempotencyKey: [maxBytes(MAX_IDEMPOTENCY_KEY_BYTES)],
});

/**
 * The per-byte rule only a caller can check, since it needs the texts it sent: an OK score's
 * per-byte rewards have one entry per UTF-8 byte of its item's completion, or none. Shared by
 * the Rollout (collect.ts) and `rlaif feedback-check`, so both hold a scorer to the same rule.
 * Returns the first offending field and why, or undefined.
 */
export function tokenRewardMismatch(
  scores: readonly Score[],
  completions: readonly string[],
): { field: string; reason: string } | undefined {
  for (const [i, s] of scores.entries()) {
    const n = s.tokenRewards.length;
    const bytes = Buffer.byteLength(completions[i] ?? "", "utf8");
    if (isOkScore(s) && n !== 0 && n !== bytes) {
      return { field: `scores[${i}].token_rewards`, reason: `has ${n} entries for ${bytes} UTF-8 bytes` };
    }
  }
  return undefined;
}

/**
 * What an external Feedback service returns for `itemCount` items: exactly one score per item,
 * each with a known status and, when OK, finite rewards. The Rollout applies it to every answer,
 * since an external scorer is untrusted input just like a request (a NaN reward would poison the
 * whole batch's baseline).
 */
export function scoreResponseRules(itemCount: number): RuleSet<typeof ScoreResponseSchema> {
  return defineRules(ScoreResponseSchema, {
    scores: [exactItems(itemCount), each(nested(scoreRules), statusConsistent)],
    scorerId: [maxBytes(256)],
    scorerVersion: [maxBytes(256)],
    modelHash: [maxBytes(256)],
  });
}
