/**
 * The validation rules of the whole public API, one object per request message, so every limit a
 * client can hit is readable in one file and matches the comments in proto/. The adapter applies
 * `REQUEST_RULES` to every incoming request before a handler sees it; handlers only check what
 * depends on their state (e.g. a prompt fitting the loaded model's context).
 *
 * The limits mirror the config table (services/core/src/config/settings.ts) where both exist, so
 * a run started over gRPC accepts what `rlaif train` accepts.
 */
import { RunConfigSchema, SamplingParamsSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import {
  ScoreItemSchema,
  ScoreRequestSchema,
  ScoreResponseSchema,
  ScoreSchema,
} from "../../gen/rlaif/feedback/v1/feedback_pb.js";
import {
  CheckpointRequestSchema,
  GetStatusRequestSchema,
  PauseRunRequestSchema,
  ResumeRunRequestSchema,
  StartRunRequestSchema,
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
import { BASELINE_KINDS } from "../config/defaults.js";
import {
  check,
  definedEnum,
  defineRules,
  each,
  eachString,
  exactItems,
  finite,
  max,
  maxBytes,
  maxItems,
  min,
  minItems,
  nested,
  nonEmpty,
  pattern,
  type RuleSet,
  range,
  required,
} from "./validation.js";

/** Byte-level tokenizer: ids 0–255 are UTF-8 bytes, 256 BOS, 257 EOS; anything larger is not a token. */
export const BYTE_VOCAB_SIZE = 258;
/** Largest prompt, in UTF-8 bytes (= byte tokens); far above any bundled model's context. */
export const MAX_PROMPT_BYTES = 4096;
/** Largest prompt or completion text a scorer accepts, in UTF-8 bytes. */
export const MAX_SCORED_TEXT_BYTES = 16_384;
/** Most prompts in one Generate or Collect call. */
export const MAX_BATCH_PROMPTS = 256;
/** Most items in one Score call. */
export const MAX_SCORE_ITEMS = 1024;
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
  (t) => t < BYTE_VOCAB_SIZE,
  (t) => `must be a token id below ${BYTE_VOCAB_SIZE}, got ${t}`,
);
const tokens = [maxItems(MAX_SEQUENCE_TOKENS), each(tokenId)];

/** Sampling parameters, shared by Generate, GenerateStream, Collect and a run's config. */
export const samplingRules = defineRules(SamplingParamsSchema, {
  maxNewTokens: [max(4096)],
  temperature: [range(0, 10)],
  topP: [range(0, 1)],
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

/** A string choice: empty (= the default) or one of `values` (the config table's `oneOf`). */
function oneOf(...values: readonly string[]) {
  return check<string>(
    (v) => v === "" || values.includes(v),
    (v) => `must be one of ${values.join(", ")}, got "${v}"`,
  );
}

/** A run's configuration: the same bounds as the config table of `rlaif train`. */
export const runConfigRules = defineRules(RunConfigSchema, {
  steps: [range(1, 100_000)],
  promptsPerStep: [range(1, 1024)],
  samplesPerPrompt: [range(1, 64)],
  sampling: [nested(samplingRules)],
  learningRate: [range(0, 1, { minExclusive: true })],
  gamma: [range(0, 1)],
  klCoef: [finite(), min(0)],
  maxGradNorm: [finite(), min(0)],
  publishEvery: [range(1, 10_000)],
  prompts: [maxItems(65_536), eachString(...prompt)],
  baselineDecay: [range(0, 1, { maxExclusive: true })],
  entropyCoef: [finite(), min(0)],
  baseline: [oneOf(...BASELINE_KINDS)],
  klIn: [oneOf("reward", "loss")],
  klEstimator: [oneOf("k1", "k3")],
  klTarget: [range(0, 1000)],
  klHorizon: [range(1, 1e9)],
  weightDecay: [range(0, 10)],
  warmupSteps: [max(100_000)],
  lrDecay: [oneOf("none", "cosine")],
  offPolicy: [oneOf("none", "ppo-clip", "truncated")],
  clipEpsilon: [range(0, 1, { minExclusive: true, maxExclusive: true })],
  truncation: [range(1, 1e6)],
  checkpointEvery: [max(100_000)],
  checkpointKeep: [max(10_000)],
});

/** Optimizer.StartRun: a config is required (an empty one is never what a caller meant). */
export const startRunRequestRules = defineRules(StartRunRequestSchema, {
  config: [required(), nested(runConfigRules)],
  runId,
});

/** Optimizer.GetStatus. */
export const getStatusRequestRules = defineRules(GetStatusRequestSchema, { runId });
/** Optimizer.WatchMetrics. */
export const watchMetricsRequestRules = defineRules(WatchMetricsRequestSchema, { runId });
/** Optimizer.Checkpoint. */
export const checkpointRequestRules = defineRules(CheckpointRequestSchema, { runId });
/** Optimizer.PauseRun. */
export const pauseRunRequestRules = defineRules(PauseRunRequestSchema, { runId });
/** Optimizer.ResumeRun. */
export const resumeRunRequestRules = defineRules(ResumeRunRequestSchema, { runId });

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
  resumeRunRequestRules,
];

/** One score of a scorer's answer: finite reward, finite per-token rewards. */
export const scoreRules = defineRules(ScoreSchema, {
  reward: [finite()],
  tokenRewards: [each(finite())],
});

/**
 * What an external Feedback service returns for `itemCount` items: exactly one score per item,
 * all finite. The Rollout applies it to every answer, since an external scorer is untrusted
 * input just like a request (a NaN reward would poison the whole batch's baseline).
 */
export function scoreResponseRules(itemCount: number): RuleSet<typeof ScoreResponseSchema> {
  return defineRules(ScoreResponseSchema, {
    scores: [exactItems(itemCount), each(nested(scoreRules))],
    scorerId: [maxBytes(256)],
    scorerVersion: [maxBytes(256)],
  });
}
