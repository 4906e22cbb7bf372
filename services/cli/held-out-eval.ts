/**
 * The held-out comparison that ends `rlaif train`: the starting policy and the trained one sample
 * the same held-out prompts with the same seed, and the report says how reward, positive share
 * and KL moved, with one before/after pair of samples. Why: a run's own step rewards are measured
 * on its training prompts by a moving policy; a fixed, disjoint prompt set sampled the same way
 * for both models is what shows the samples actually became more positive.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, ValidationError } from "../core/src/errors.js";
import { type BackendName, startBackend } from "../core/src/model/backend.js";
import { heldOutPrompts } from "../core/src/model/corpus.js";
import { loadModel } from "../core/src/model/model-source.js";
import { promptRow } from "../core/src/model/sampling.js";
import { tokenizerOf } from "../core/src/model/tokenizer.js";
import { DEFAULT_PROMPT_COUNT } from "../optimizer/main.js";
import { HELD_OUT_FILE, writeFileAtomic } from "../optimizer/run-files.js";
import { measureSamples, type SampleExample, type SampleQuality } from "./sample-quality.js";
import { DEFAULT_EVAL_PROMPTS, EVAL_SAMPLES, MAX_EVAL_PROMPTS } from "./specs.js";

/** Sampler seed of the evaluation, fixed so that two runs' reports are measured alike. */
export const EVAL_SEED = 20261129;
/** File name of the report inside the run's directory (run-files.ts, where the run report reads it). */
export { HELD_OUT_FILE };

/** `--eval-prompts`: a whole number in 0..MAX_EVAL_PROMPTS (0 skips the evaluation). */
export function parseEvalPrompts(raw: string | string[] | boolean | undefined): number {
  if (raw === undefined) return DEFAULT_EVAL_PROMPTS;
  const text = String(raw).trim();
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 0 && n <= MAX_EVAL_PROMPTS)) {
    throw new ConfigError(
      `--eval-prompts: must be a whole number between 0 and ${MAX_EVAL_PROMPTS} (0 skips the held-out report), got "${String(raw)}"`,
    );
  }
  return n;
}

/**
 * `count` evaluation prompts for a run of `seed`: the corpus prompts right after the
 * DEFAULT_PROMPT_COUNT a run trains on by default, in the same seeded order, so the two sets
 * never overlap (a run given its own prompts is still evaluated on these).
 */
export function heldOutEvalPrompts(count: number, seed: number): string[] {
  return heldOutPrompts(DEFAULT_PROMPT_COUNT + count, seed).slice(DEFAULT_PROMPT_COUNT);
}

/** What `held-out.json` holds. */
export interface HeldOutReport {
  evalSeed: number;
  samplesPerPrompt: number;
  maxNewTokens: number;
  prompts: string[];
  /** Model (checkpoint file or model directory) measured as "before"; also the KL reference. */
  startModel: string;
  /** The run's final checkpoint, measured as "after". */
  finalModel: string;
  /** Step the start model had reached: 0 for a new run, the resumed-from step for `--resume`. */
  startStep: number;
  before: SampleQuality;
  after: SampleQuality;
  /** The shown pair (see {@link pickPair}). */
  pair: { prompt: string; before: SampleExample; after: SampleExample };
}

/**
 * The before/after pair to show: over every prompt's first sample (the same sampler row for
 * both models), the prompt whose reward rose most from before to after; on a tie the earliest
 * prompt, so the choice is deterministic for a given run.
 */
export function pickPair(before: SampleQuality, after: SampleQuality): HeldOutReport["pair"] {
  let best = 0;
  let bestGain = Number.NEGATIVE_INFINITY;
  after.examples.forEach((a, i) => {
    const gain = a.reward - (before.examples[i]?.reward ?? 0);
    if (gain > bestGain) {
      best = i;
      bestGain = gain;
    }
  });
  const b = before.examples[best];
  const a = after.examples[best];
  if (!a || !b) throw new ValidationError("prompts", "no held-out samples to pair: give at least one prompt");
  return { prompt: a.prompt, before: b, after: a };
}

/** Where the two models come from and how to sample them. */
export interface HeldOutRequest {
  startModel: string;
  finalModel: string;
  startStep: number;
  prompts: string[];
  maxNewTokens: number;
  samplesPerPrompt?: number;
  seed?: number;
}

/**
 * Measure the start and final models on the held-out prompts, the start model serving as the
 * KL reference of both (so "before" has KL 0). The backend must be started.
 */
export async function evaluateHeldOut(req: HeldOutRequest): Promise<HeldOutReport> {
  const samples = req.samplesPerPrompt ?? EVAL_SAMPLES;
  const seed = req.seed ?? EVAL_SEED;
  const start = await loadModel(req.startModel);
  try {
    // a small model's context may not hold a long prompt plus the new tokens: leave those out
    const tok = tokenizerOf(start);
    const { contextLength } = start.config;
    const fits = (p: string) => promptRow(tok.encode(p), tok.bos).length + req.maxNewTokens <= contextLength;
    const prompts = req.prompts.filter(fits);
    if (prompts.length === 0)
      throw new ValidationError(
        "prompts",
        `no held-out prompt fits the model's ${contextLength} positions with ${req.maxNewTokens} new tokens`,
      );
    const opts = { samples, maxNewTokens: req.maxNewTokens, seed, examples: prompts.length };
    const before = await measureSamples(start, start, prompts, opts);
    const final = await loadModel(req.finalModel);
    try {
      const after = await measureSamples(final, start, prompts, opts);
      return {
        evalSeed: seed,
        samplesPerPrompt: samples,
        maxNewTokens: req.maxNewTokens,
        prompts,
        startModel: req.startModel,
        finalModel: req.finalModel,
        startStep: req.startStep,
        before,
        after,
        pair: pickPair(before, after),
      };
    } finally {
      final.dispose();
    }
  } finally {
    start.dispose();
  }
}

/** `x` to `digits` decimals, without the "-" of a value that rounds to zero. */
function fixed(x: number, digits: number): string {
  const s = x.toFixed(digits);
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s;
}

/** `fixed` with an explicit "+" on values that are not negative. */
function signed(x: number, digits = 2): string {
  const s = fixed(x, digits);
  return s.startsWith("-") ? s : `+${s}`;
}

const percent = (x: number) => `${Math.round(x * 100)}%`;

/** "1 prompt", "16 prompts". */
const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

/** A completion as printed: quoted, cut at `max` characters. */
function quoted(text: string, max = 100): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

/**
 * The report as a few lines, e.g.
 * `held-out reward (16 prompts × 4 samples): -0.12 → +0.31 (+1.1 std of the start), positive 22% → 58%, KL 3.1 nats`
 * followed by the before and after sample of one prompt.
 */
export function heldOutLines(r: HeldOutReport): string[] {
  const { before, after, pair } = r;
  const std =
    before.stdReward > 0
      ? ` (${signed((after.meanReward - before.meanReward) / before.stdReward, 1)} std of the start)`
      : "";
  const from = r.startStep > 0 ? ` from step ${r.startStep}` : "";
  return [
    `held-out reward${from} (${count(r.prompts.length, "prompt")} × ${count(r.samplesPerPrompt, "sample")}): ` +
      `${signed(before.meanReward)} → ${signed(after.meanReward)}${std}, ` +
      `positive ${percent(before.positiveShare)} → ${percent(after.positiveShare)}, KL ${fixed(after.klToReference, 1)} nats`,
    `  before: ${JSON.stringify(pair.prompt)} → ${quoted(pair.before.completion)} (${signed(pair.before.reward)})`,
    `  after:  ${JSON.stringify(pair.prompt)} → ${quoted(pair.after.completion)} (${signed(pair.after.reward)})`,
  ];
}

/** Write the report as `<runDir>/held-out.json` atomically; returns its path. */
export function writeHeldOut(runDir: string, report: HeldOutReport): string {
  const file = join(runDir, HELD_OUT_FILE);
  writeFileAtomic(file, `${JSON.stringify(report, null, 2)}\n`);
  return file;
}

/** What the end of `rlaif train` knows about the run just finished. */
export interface FinishedRun {
  /** The run's directory (held-out.json goes there). */
  dir: string;
  seed: number;
  maxNewTokens: number;
  /** The model the run's weights started from (for `--resume`, the resumed-from checkpoint). */
  startModel: string;
  startStep: number;
  /** The run's final checkpoint. */
  finalModel: string;
  /** Compute backend the run was configured with (the models load on this thread). */
  backend: "auto" | BackendName;
  /** The external FeedbackService that scored the run, "" for the built-in rule scorer. */
  feedbackAddress: string;
  /** The built-in scorer's weighted rules (`--feedback-rules`), "" for the AFINN scorer alone. */
  feedbackRules: string;
  /** The reward-model directory that scored the run (`--reward-model`), "" for the rules. */
  rewardModel: string;
  /** The LLM judge's base URL that scored the run, alone or mixed (`--judge-url`), "" for none. */
  judgeUrl: string;
}

/**
 * Evaluate a finished run on `count` held-out prompts, print the report through `log` and write
 * held-out.json. Two runs get one line saying why not instead: one scored by an external
 * FeedbackService or by a reward model (the report scores with the built-in rule scorer, whose figures would not
 * say whether the run learnt what its own scorer asked for), and a resumed run whose resumed-from
 * checkpoint its own pruning has deleted by now (there is no "before" left to measure).
 */
export async function reportHeldOut(
  run: FinishedRun,
  count: number,
  log: (line: string) => void,
): Promise<void> {
  if (run.feedbackAddress) {
    log(
      `held-out report skipped: it scores with the built-in rule scorer, and this run was scored by the FeedbackService at ${run.feedbackAddress} (--eval-prompts 0 drops this line)`,
    );
    return;
  }
  if (run.judgeUrl) {
    log(
      `held-out report skipped: it scores with the AFINN rule scorer, and this run was scored by the LLM judge at ${run.judgeUrl}${run.rewardModel || run.feedbackRules ? " in a mix" : ""} (--eval-prompts 0 drops this line)`,
    );
    return;
  }
  if (run.rewardModel) {
    log(
      `held-out report skipped: it scores with the AFINN rule scorer, and this run was scored by the reward model ${run.rewardModel} alone (bench/rm-learning.ts compares with the labelling rule; --eval-prompts 0 drops this line)`,
    );
    return;
  }
  if (run.feedbackRules !== "" && run.feedbackRules.replace(/\s/g, "") !== "afinn:1") {
    log(
      `held-out report skipped: it scores with the AFINN rule scorer alone, and this run was scored by the rules ${run.feedbackRules} (--eval-prompts 0 drops this line)`,
    );
    return;
  }
  if (!existsSync(run.startModel)) {
    log(
      `held-out report skipped: the starting checkpoint ${run.startModel} is gone (pruned by --checkpoint-keep)`,
    );
    return;
  }
  await startBackend(run.backend);
  let report: HeldOutReport;
  try {
    report = await evaluateHeldOut({
      startModel: run.startModel,
      finalModel: run.finalModel,
      startStep: run.startStep,
      prompts: heldOutEvalPrompts(count, run.seed),
      maxNewTokens: run.maxNewTokens,
    });
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    log(`held-out report skipped: ${err.message}`);
    return;
  }
  for (const line of heldOutLines(report)) log(line);
  log(`held-out report: ${writeHeldOut(run.dir, report)}`);
}
