/**
 * `sampleToken` draws the tokens and reports the log-probs it always did: the implementation it
 * replaced is kept here verbatim (as it stood before its loops were tightened) and both run over
 * many random rows of logits, seeds and sampling parameters, compared bit for bit, including how
 * many random numbers each consumed.
 */
import { describe, expect, it } from "vitest";
import { MASKED } from "../services/core/src/model/layers.js";
import { Rng } from "../services/core/src/model/rng.js";
import { type SamplingParams, sampleToken } from "../services/core/src/model/sampling.js";

/** The previous implementation, verbatim. */
const previous = (() => {
  function expSum(z: Float32Array, max: number): number {
    let sum = 0;
    for (const v of z) sum += Math.exp(v - max);
    return sum;
  }
  let weights = new Float64Array(0);
  function drawTruncated(z: Float32Array, p: SamplingParams, rng: Rng, max: number): number {
    let ids = Array.from(z.keys());
    ids.sort((a, b) => (z[b] as number) - (z[a] as number) || a - b);
    if (p.topK > 0) ids = ids.slice(0, p.topK);
    const w = ids.map((i) => Math.exp(((z[i] as number) - max) / p.temperature));
    let total = w.reduce((a, b) => a + b, 0);
    if (p.topP < 1) {
      let cum = 0;
      let keep = 0;
      while (keep < w.length && cum < p.topP * total) cum += w[keep++] as number;
      ids = ids.slice(0, Math.max(1, keep));
      total = cum;
    }
    let u = rng.nextFloat() * total;
    for (let k = 0; k < ids.length; k++) {
      u -= w[k] as number;
      if (u < 0) return ids[k] as number;
    }
    return ids[ids.length - 1] as number;
  }
  return function sampleToken(z: Float32Array, p: SamplingParams, rng: Rng): { id: number; logprob: number } {
    let best = 0;
    for (let i = 1; i < z.length; i++) if ((z[i] as number) > (z[best] as number)) best = i;
    const max = z[best] as number;
    const logprob = (id: number, sum: number) => (z[id] as number) - (max + Math.log(sum));
    if (p.temperature === 0) return { id: best, logprob: logprob(best, expSum(z, max)) };
    if (p.topK > 0 || p.topP < 1) {
      const id = drawTruncated(z, p, rng, max);
      return { id, logprob: logprob(id, expSum(z, max)) };
    }
    if (weights.length < z.length) weights = new Float64Array(z.length);
    let total = 0;
    for (let i = 0; i < z.length; i++) {
      const w = Math.exp(((z[i] as number) - max) / p.temperature);
      weights[i] = w;
      total += w;
    }
    let id = z.length - 1;
    let u = rng.nextFloat() * total;
    for (let k = 0; k < z.length; k++) {
      u -= weights[k] as number;
      if (u < 0) {
        id = k;
        break;
      }
    }
    return { id, logprob: logprob(id, p.temperature === 1 ? total : expSum(z, max)) };
  };
})();

/** A row of logits of one of several shapes: spread, peaked, tied, masked, tiny vocabularies. */
function logits(rng: Rng, row: number): Float32Array {
  const v = [258, 258, 258, 7, 1, 50257][row % 6] as number;
  const scale = [0.1, 1, 3, 12, 40][row % 5] as number;
  const z = new Float32Array(v);
  for (let i = 0; i < v; i++) z[i] = rng.nextNormal() * scale;
  if (row % 7 === 0) for (let i = 0; i < v; i += 3) z[i] = z[0] as number; // ties with the first
  if (row % 11 === 0) for (let i = 1; i < v; i += 2) z[i] = MASKED; // masked ids
  if (row % 13 === 0) z.fill(2.5); // all tied
  return z;
}

const PARAMS: Omit<SamplingParams, "seed">[] = [1, 0, 0.7, 1.3, 2].flatMap((temperature) =>
  [
    [0, 1],
    [5, 1],
    [0, 0.9],
    [40, 0.95],
  ].map(([topK, topP]) => ({
    maxNewTokens: 1,
    temperature,
    topK: topK as number,
    topP: topP as number,
    stopAtEos: false,
  })),
);

describe("sample token", () => {
  it("sample token - ids, log-probs and random draws are bit-identical to the previous implementation", () => {
    const data = new Rng(2024, 9);
    let rows = 0;
    for (let seed = 0; seed < 60; seed++) {
      const ours = new Rng(seed, seed % 4);
      const theirs = new Rng(seed, seed % 4);
      for (let t = 0; t < 30; t++) {
        const z = logits(data, rows++);
        // the RL default (T = 1, no truncation) most often, every other combination in turn
        const base =
          t % 2 === 0
            ? (PARAMS[0] as SamplingParams)
            : (PARAMS[(t + seed) % PARAMS.length] as SamplingParams);
        const p = { ...base, seed };
        const got = sampleToken(z, p, ours);
        const want = previous(z, p, theirs);
        expect(got.id, `row ${rows} ${JSON.stringify(p)}`).toBe(want.id);
        expect(Object.is(got.logprob, want.logprob), `row ${rows}: ${got.logprob} vs ${want.logprob}`).toBe(
          true,
        );
      }
      expect(ours.nextUint32(), `seed ${seed}: random streams in step`).toBe(theirs.nextUint32());
    }
    expect(rows).toBe(1800);
  });
});
