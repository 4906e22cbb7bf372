/**
 * Shared pieces of the model tests (Transformer, RNN, Seq2Seq, sampler): one sampling setup for
 * seeded-generation checks and the float64 helpers the hand-written reference models use.
 */
import type { SamplingParams } from "../../services/core/src/model/sampler.js";

/** Seeded sampling at temperature 1 with no filters and no EOS stop: every row runs 8 tokens. */
export const TEST_SAMPLING: SamplingParams = {
  maxNewTokens: 8,
  temperature: 1,
  topK: 0,
  topP: 1,
  seed: 3,
  stopAtEos: false,
};

/** σ(x) in float64, for reference cell equations. */
export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** max_i |a_i − b_i|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}
