/**
 * The LLM judge (judge.ts) as an in-process scorer of the FeedbackService (`rlaif serve feedback
 * --judge-url …`): each item is judged over an OpenAI-compatible API; a parsed score is an OK
 * reward, an unparseable, late or failed answer is SCORE_STATUS_ERROR with the judge's reason —
 * never a reward of 0, which would be a silent wrong learning signal.
 *
 * Provenance: scorer id "judge", and model_hash = sha256 of (model, rubric, mode, temperature),
 * since those four decide what a score means; a change of any of them is a new scorer to the
 * consumer. GetInfo says deterministic only at temperature 0.
 */
import { readFileSync } from "node:fs";
import { ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError } from "../core/src/errors.js";
import { sha256Hex } from "../core/src/hash.js";
import type { ScoreInit } from "./idempotency.js";
import type { ItemScorer } from "./item-scorer.js";
import { Judge, type JudgeOptions, resolveJudgeApiKey } from "./judge.js";

/** Scorer id of the judge in provenance and GetInfo. */
export const JUDGE_SCORER_ID = "judge";
/** Version of this adapter's mapping of judge answers to scores (bump when it changes). */
export const JUDGE_SCORER_VERSION = "1";
/** Items one Score call may carry: each is one HTTP request to the judge. */
export const JUDGE_MAX_BATCH_ITEMS = 64;

/** Default rubric (placeholders `{prompt}`, `{completion}`), asking for a 0-10 score line. */
export const DEFAULT_JUDGE_RUBRIC =
  "Rate how well the response continues the prompt, from 0 (bad) to 10 (excellent).\nPrompt: {prompt}\nResponse: {completion}\nAnswer with a line 'Score: N'.\n";

/** The judge scorer's settings, as `serve feedback` reads them from flags or a config file. */
export interface JudgeScorerSettings {
  judgeUrl: string;
  judgeModel: string;
  judgeMode: "completions" | "chat";
  /** File holding the rubric; "" = {@link DEFAULT_JUDGE_RUBRIC}. */
  judgeRubricFile: string;
  judgeApiKeyEnv: string;
  judgeApiKeyFile: string;
  judgeTimeoutMs: number;
  judgeTemperature: number;
}

/** model_hash of a judge: what decides the meaning of its scores, hashed. */
export function judgeModelHash(o: Pick<JudgeOptions, "model" | "rubric" | "mode" | "temperature">): string {
  const parts = [o.model, o.rubric, o.mode, String(o.temperature ?? 0)].join("\u0000");
  return sha256Hex(new TextEncoder().encode(parts));
}

/**
 * Judge options from settings: the rubric read from its file, the key from its env var or file.
 * ConfigError naming the flag when one is missing or unusable, so start-up fails, not each item.
 */
export function judgeOptionsFrom(s: JudgeScorerSettings, env: NodeJS.ProcessEnv = process.env): JudgeOptions {
  if (!s.judgeModel)
    throw new ConfigError("--judge-model is required with --judge-url (the model id the judge API serves)");
  if (s.judgeApiKeyEnv && s.judgeApiKeyFile) {
    throw new ConfigError("--judge-api-key-env and --judge-api-key-file: give one of them, not both");
  }
  let rubric = DEFAULT_JUDGE_RUBRIC;
  if (s.judgeRubricFile) {
    try {
      rubric = readFileSync(s.judgeRubricFile, "utf8");
    } catch (err) {
      throw new ConfigError(`--judge-rubric-file ${s.judgeRubricFile}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  const apiKey = resolveJudgeApiKey(
    {
      ...(s.judgeApiKeyEnv ? { apiKeyEnv: s.judgeApiKeyEnv } : {}),
      ...(s.judgeApiKeyFile ? { apiKeyFile: s.judgeApiKeyFile } : {}),
    },
    env,
  );
  return {
    baseUrl: s.judgeUrl,
    model: s.judgeModel,
    mode: s.judgeMode,
    rubric,
    timeoutMs: s.judgeTimeoutMs,
    temperature: s.judgeTemperature,
    ...(apiKey ? { apiKey } : {}),
  };
}

/**
 * The judge as an ItemScorer: rewards in the judge's score range (default [0, 10]), no per-token
 * rewards (a judge scores the whole text), at most {@link JUDGE_MAX_BATCH_ITEMS} items a call.
 */
export function judgeScorer(opts: JudgeOptions): ItemScorer {
  const judge = new Judge(opts);
  const [min, max] = opts.scoreRange ?? [0, 10];
  const temperature = opts.temperature ?? 0;
  return {
    info: {
      scorerId: JUDGE_SCORER_ID,
      scorerVersion: JUDGE_SCORER_VERSION,
      modelHash: judgeModelHash(opts),
      description: `LLM judge ${opts.model} over ${opts.mode} at ${opts.baseUrl} (temperature ${temperature})`,
      rewardRange: { min, max },
      deterministic: temperature === 0,
      maxBatchItems: JUDGE_MAX_BATCH_ITEMS,
      tokenRewards: false,
    },
    async score(items) {
      const results = await judge.score(items);
      return results.map(
        (r): ScoreInit =>
          r.status === "ok"
            ? { reward: r.reward, rationale: r.rationale, status: ScoreStatus.OK }
            : { reward: 0, status: ScoreStatus.ERROR, error: r.reason },
      );
    },
  };
}
