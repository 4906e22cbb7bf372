/**
 * Measures of a policy's samples on a fixed set of prompts: AI-feedback reward, the share the
 * scorer rates positive, KL to a reference model, and guards against collapse (distinct n-grams,
 * repetition, reference perplexity). Why here: both the learning benchmark and the end of
 * `rlaif train` compare a policy before and after training with exactly these figures, so they
 * are computed once, for any model and its own tokenizer.
 */
import { ValidationError } from "../core/src/errors.js";
import type { CausalLM } from "../core/src/model/causal-lm.js";
import { dictionaryWordShare, loadWordList } from "../core/src/model/dictionary-words.js";
import { generate, sequenceLogprobs } from "../core/src/model/sampler.js";
import { tokenizerOf } from "../core/src/model/tokenizer.js";
import { tokensText } from "../core/src/model/tokenizer-types.js";
import { scoreCompletion } from "../feedback/scorer.js";

/** One prompt's first sample, as the scorer rated it. */
export interface SampleExample {
  prompt: string;
  completion: string;
  reward: number;
}

/** What one evaluation reports. */
export interface SampleQuality {
  meanReward: number;
  stdReward: number;
  /** Share of samples with reward > 0. */
  positiveShare: number;
  /** Mean over samples of Σ_t (log π(y_t) − log π_ref(y_t)), nats per sample. */
  klToReference: number;
  /** Distinct word bigrams / all word bigrams, over all samples. */
  distinct2: number;
  /** Share of word trigrams that already occurred earlier in the same sample. */
  repetition: number;
  /** exp(− mean log π_ref per token) of the samples: fluency as the reference model sees it. */
  referencePerplexity: number;
  /**
   * Share of the samples' words in Debian's wamerican list (dictionary-words.ts): does the policy
   * still write English? Absent where the list is not installed.
   */
  dictionaryWords?: number;
  /** The first sample of each of the first `examples` prompts, in prompt order. */
  examples: SampleExample[];
}

/** How {@link measureSamples} samples: temperature 1, no truncation, so KL is the policy's own. */
export interface MeasureOptions {
  /** Completions per prompt. */
  samples: number;
  maxNewTokens: number;
  /** Sampler seed: the same seed gives both policies the same per-row random streams. */
  seed: number;
  /** How many prompts' first samples to keep as examples (default 6). */
  examples?: number;
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
}

function words(text: string): string[] {
  return text.toLowerCase().match(/[a-z']+/g) ?? [];
}

let wordList: ReadonlySet<string> | null | undefined;

/** The wamerican list, read once; null where it is not installed (the measure is then left out). */
function dictionary(): ReadonlySet<string> | null {
  if (wordList === undefined) {
    try {
      wordList = loadWordList();
    } catch {
      wordList = null;
    }
  }
  return wordList;
}

/** Distinct-2 and trigram repetition over `texts` (word level). */
function diversity(texts: string[]): { distinct2: number; repetition: number } {
  let bigrams = 0;
  const distinct = new Set<string>();
  let trigrams = 0;
  let repeated = 0;
  for (const text of texts) {
    const w = words(text);
    for (let i = 0; i + 1 < w.length; i++) {
      bigrams++;
      distinct.add(`${w[i]} ${w[i + 1]}`);
    }
    const seen = new Set<string>();
    for (let i = 0; i + 2 < w.length; i++) {
      const g = `${w[i]} ${w[i + 1]} ${w[i + 2]}`;
      trigrams++;
      if (seen.has(g)) repeated++;
      seen.add(g);
    }
  }
  return { distinct2: distinct.size / Math.max(bigrams, 1), repetition: repeated / Math.max(trigrams, 1) };
}

/**
 * Sample `opts.samples` completions per prompt from `model` and measure them against `reference`
 * (which must read the same tokenizer: its log-probs are taken of `model`'s tokens).
 */
export async function measureSamples(
  model: CausalLM,
  reference: CausalLM,
  prompts: string[],
  opts: MeasureOptions,
): Promise<SampleQuality> {
  const tok = tokenizerOf(model);
  const refTok = tokenizerOf(reference);
  if (refTok.vocabSize !== tok.vocabSize || refTok.bos !== tok.bos) {
    throw new ValidationError(
      "reference",
      `reads another tokenizer (${refTok.describe()}) than the policy (${tok.describe()})`,
    );
  }
  const rows = prompts.flatMap((p) => Array.from({ length: opts.samples }, () => tok.encode(p)));
  const outs = await generate(model, rows, {
    maxNewTokens: opts.maxNewTokens,
    temperature: 1,
    topK: 0,
    topP: 1,
    seed: opts.seed,
    stopAtEos: true,
  });
  const completions = outs.map((o) => o.tokens);
  const refLogprobs = sequenceLogprobs(reference, rows, completions);
  const texts = outs.map((o) => tokensText(tok, o.tokens));
  const rewards = texts.map((t) => scoreCompletion(t).reward);
  const m = mean(rewards);
  const kls = outs.map((o, i) => o.logprobs.reduce((s, lp, t) => s + lp - (refLogprobs[i]?.[t] ?? lp), 0));
  const refTokenLogprobs = refLogprobs.flat();
  const keep = Math.min(opts.examples ?? 6, prompts.length);
  const list = dictionary();
  return {
    meanReward: m,
    stdReward: Math.sqrt(mean(rewards.map((r) => (r - m) ** 2))),
    positiveShare: rewards.filter((r) => r > 0).length / Math.max(rewards.length, 1),
    klToReference: mean(kls),
    ...diversity(texts),
    referencePerplexity: Math.exp(-mean(refTokenLogprobs)),
    ...(list ? { dictionaryWords: dictionaryWordShare(texts, list).share } : {}),
    examples: Array.from({ length: keep }, (_, k) => ({
      prompt: prompts[k] as string,
      completion: texts[k * opts.samples] as string,
      reward: rewards[k * opts.samples] as number,
    })),
  };
}
