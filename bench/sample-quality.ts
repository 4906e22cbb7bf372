/**
 * Measures of a policy's samples on a fixed set of prompts, shared by the learning benchmark:
 * AI-feedback reward, the share the scorer rates positive, KL to a reference model, and guards
 * against collapse (distinct n-grams, repetition, reference perplexity).
 */
import type { CausalLM } from "../services/core/src/model/causal-lm.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import { decode, encode } from "../services/core/src/model/tokenizer.js";
import { scoreCompletion } from "../services/feedback/scorer.js";

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
  /** A few (prompt, completion, reward) examples. */
  examples: { prompt: string; completion: string; reward: number }[];
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
}

function words(text: string): string[] {
  return text.toLowerCase().match(/[a-z']+/g) ?? [];
}

/** Sample `samples` completions per prompt from `model` and measure them against `reference`. */
export async function measureSamples(
  model: CausalLM,
  reference: CausalLM,
  prompts: string[],
  opts: { samples: number; maxNewTokens: number; seed: number },
): Promise<SampleQuality> {
  const rows = prompts.flatMap((p) => Array.from({ length: opts.samples }, () => encode(p)));
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
  const texts = outs.map((o) => decode(o.tokens));
  const rewards = texts.map((t) => scoreCompletion(t).reward);
  const m = mean(rewards);
  const kls = outs.map((o, i) => o.logprobs.reduce((s, lp, t) => s + lp - (refLogprobs[i]?.[t] ?? lp), 0));
  const refTokenLogprobs = refLogprobs.flat();
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
  return {
    meanReward: m,
    stdReward: Math.sqrt(mean(rewards.map((r) => (r - m) ** 2))),
    positiveShare: rewards.filter((r) => r > 0).length / Math.max(rewards.length, 1),
    klToReference: mean(kls),
    distinct2: distinct.size / Math.max(bigrams, 1),
    repetition: repeated / Math.max(trigrams, 1),
    referencePerplexity: Math.exp(-mean(refTokenLogprobs)),
    examples: texts
      .slice(0, 6 * opts.samples)
      .filter((_, i) => i % opts.samples === 0)
      .map((completion, k) => ({
        prompt: prompts[k] as string,
        completion,
        reward: rewards[k * opts.samples] as number,
      })),
  };
}
