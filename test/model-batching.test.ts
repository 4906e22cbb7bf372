/**
 * Continuous batching (continuous-sampler.ts over each kind's row decoder): a request's tokens,
 * log-probs, finish reasons and stop sequences are bit-identical whether it ran alone or batched
 * with other requests (other prompts, params, seeds, joining later, leaving earlier, aborted),
 * for every model kind; a prompt's samples share one prefill; scoring a row does not depend on
 * the rows scored with it. Runs on whichever matmul the wasm backend has (OpenBLAS or its own).
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { batchInvariant } from "../services/core/src/model/blas-kernels.js";
import type { CausalLM } from "../services/core/src/model/causal-lm.js";
import { ContinuousSampler } from "../services/core/src/model/continuous-sampler.js";
import { RnnLM } from "../services/core/src/model/rnn.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import type { GenerationResult, SamplingParams } from "../services/core/src/model/sampling.js";
import { Seq2SeqLM } from "../services/core/src/model/seq2seq.js";
import { encode } from "../services/core/src/model/tokenizer.js";
import { TransformerLM } from "../services/core/src/model/transformer.js";

const CONTEXT = 40;
const BASE: SamplingParams = { maxNewTokens: 12, temperature: 1, topK: 0, topP: 1, seed: 5, stopAtEos: true };

/** One model of each kind, small and random (two head counts: one head takes other matmul paths). */
function models(): [string, CausalLM][] {
  const rnn = { vocabSize: 258, contextLength: CONTEXT, dModel: 16, hidden: 24, nLayers: 2 };
  return [
    [
      "transformer",
      new TransformerLM({ vocabSize: 258, contextLength: CONTEXT, dModel: 32, nLayers: 2, nHeads: 2 }, 3),
    ],
    [
      "transformer, one head",
      new TransformerLM({ vocabSize: 258, contextLength: CONTEXT, dModel: 16, nLayers: 1, nHeads: 1 }, 4),
    ],
    ["gru", new RnnLM({ ...rnn, kind: "gru" }, 5)],
    ["lstm", new RnnLM({ ...rnn, kind: "lstm" }, 6)],
    ["seq2seq", new Seq2SeqLM({ ...rnn, kind: "seq2seq", nLayers: 1 }, 7)],
  ];
}

interface Request {
  prompts: number[][];
  p: SamplingParams;
}

/** Exact comparison: JSON writes every number with the digits that round-trip it. */
const bits = (r: GenerationResult[][]) => JSON.stringify(r);

/**
 * Mixed requests: different prompts and lengths, G samples of one prompt, greedy, top-k, top-p,
 * other seeds, short and long budgets, a prompt near the context end, and a stop sequence that
 * is sure to match (a byte the request samples alone, found by a first run without it).
 */
async function mixedRequests(model: CausalLM): Promise<Request[]> {
  const requests: Request[] = [
    { prompts: [encode("Hello there")], p: BASE },
    { prompts: Array.from({ length: 4 }, () => encode("The film was")), p: { ...BASE, seed: 9 } },
    { prompts: [encode("A"), encode("Longer prompt, longer rows")], p: { ...BASE, temperature: 0 } },
    { prompts: [encode("top k"), encode("top k")], p: { ...BASE, topK: 5, temperature: 0.7, seed: 2 } },
    { prompts: [encode("nucleus")], p: { ...BASE, topP: 0.8, maxNewTokens: 20, stopAtEos: false } },
    { prompts: [encode("x".repeat(CONTEXT - 4))], p: { ...BASE, maxNewTokens: 30 } },
  ];
  const probe = { prompts: [encode("Stop me")], p: { ...BASE, seed: 11, stopAtEos: false } };
  const [alone] = await generate(model, probe.prompts, probe.p);
  const byte = alone?.tokens.slice(2).find((t) => t < 128 && t > 32) ?? 101;
  requests.push({ prompts: probe.prompts, p: { ...probe.p, stop: [String.fromCharCode(byte)] } });
  return requests;
}

describe("batching", () => {
  let all: [string, CausalLM][];
  beforeAll(async () => {
    await initBackend("wasm");
    all = models();
  });
  afterAll(() => {
    for (const [, m] of all) m.dispose();
  });

  it("batching - a request's tokens, log-probs, finish reasons and stops are bit-identical alone and batched, every kind", async () => {
    for (const [kind, model] of all) {
      const requests = await mixedRequests(model);
      const alone: GenerationResult[][] = [];
      for (const r of requests) alone.push(await generate(model, r.prompts, r.p));
      const reasons = new Set(alone.flat().map((o) => o.finishReason));
      expect(reasons.has("stop") && reasons.has("length") && reasons.has("context"), kind).toBe(true);
      // Together: half join at once, the rest at the 3rd token of the first (rows of the first
      // requests are mid-row then), in a batch whose slots are reused and re-laid as rows leave.
      const sampler = new ContinuousSampler(model, 12);
      const together: Promise<GenerationResult[]>[] = [];
      const late = () => {
        for (const r of requests.slice(3)) together.push(sampler.submit(r.prompts, r.p));
      };
      let seen = 0;
      together.push(
        sampler.submit(requests[0]?.prompts ?? [], (requests[0] as Request).p, () => {
          if (++seen === 3) late();
        }),
      );
      for (const r of requests.slice(1, 3)) together.push(sampler.submit(r.prompts, r.p));
      await together[0];
      expect(together).toHaveLength(requests.length);
      const batched = await Promise.all(together);
      expect(bits(batched), kind).toBe(bits(alone));
      await sampler.idle();
    }
  });

  it("batching - rows join at token boundaries and leave when they finish; an aborted request leaves, the others are unchanged", async () => {
    const model = (all[0] as [string, CausalLM])[1];
    const long = { prompts: [encode("long one")], p: { ...BASE, maxNewTokens: 30, stopAtEos: false } };
    const short = { prompts: [encode("short")], p: { ...BASE, maxNewTokens: 3, stopAtEos: false, seed: 8 } };
    const doomed = { prompts: [encode("doomed"), encode("doomed!")], p: { ...BASE, maxNewTokens: 30 } };
    const [longAlone, shortAlone] = [
      await generate(model, long.prompts, long.p),
      await generate(model, short.prompts, short.p),
    ];
    const before = tf.memory().numTensors;
    const sampler = new ContinuousSampler(model);
    const abort = new AbortController();
    const order: string[] = [];
    let lateShort: Promise<GenerationResult[]> | null = null;
    let tokens = 0;
    const longRun = sampler.submit(long.prompts, long.p, () => {
      tokens++;
      if (tokens === 5) lateShort = sampler.submit(short.prompts, short.p).finally(() => order.push("short"));
      if (tokens === 8) abort.abort(new Error("client went away"));
    });
    const doomedRun = sampler.submit(doomed.prompts, doomed.p, undefined, abort.signal);
    await expect(doomedRun).rejects.toThrow("client went away");
    expect(bits([await longRun.finally(() => order.push("long"))])).toBe(bits([longAlone]));
    expect(bits([await (lateShort as unknown as Promise<GenerationResult[]>)])).toBe(bits([shortAlone]));
    // the short request joined after the long one and left before it
    expect(order).toEqual(["short", "long"]);
    await sampler.idle();
    expect(tf.memory().numTensors).toBe(before);
  });

  it("batching - the samples of a prompt share one prefill, yet draw different tokens", async () => {
    const model = (all[0] as [string, CausalLM])[1];
    const prefilled: number[] = [];
    const counting = Object.create(model) as CausalLM;
    counting.decoder = (capacity: number) => {
      const d = model.decoder(capacity);
      const prefill = d.prefill.bind(d);
      d.prefill = (prompts, slots) => {
        prefilled.push(prompts.length);
        return prefill(prompts, slots);
      };
      return d;
    };
    const sampler = new ContinuousSampler(counting);
    const prompt = encode("Same prompt");
    const [a, b] = await Promise.all([
      sampler.submit([prompt, prompt, prompt], BASE),
      sampler.submit([prompt], { ...BASE, seed: 77 }),
    ]);
    // one prompt prefilled once for the 4 rows of both requests
    expect(prefilled).toEqual([1]);
    expect(new Set([...(a ?? []), ...(b ?? [])].map((r) => r.tokens.join())).size).toBe(4);
  });

  it("batching - under batchInvariant a row's linear layer has the same bits whatever the rows in the call", () => {
    tf.tidy(() => {
      for (const [k, n] of [
        [512, 128],
        [128, 258],
      ] as const) {
        const w = tf.randomNormal([k, n], 0, 1, "float32", 1) as tf.Tensor2D;
        const bias = tf.randomNormal([n], 0, 1, "float32", 2) as tf.Tensor1D;
        const x = tf.randomNormal([70, k], 0, 1, "float32", 3) as tf.Tensor2D;
        const row = (m: number) =>
          batchInvariant(() => [
            ...tf.fused
              .matMul({ a: x.slice([0, 0], [m, k]), b: w, bias })
              .dataSync()
              .subarray(0, n),
            ...tf
              .matMul(x.slice([0, 0], [m, k]), w)
              .dataSync()
              .subarray(0, n),
          ]);
        const alone = JSON.stringify(row(1));
        for (const m of [2, 15, 16, 17, 64, 70])
          expect(JSON.stringify(row(m)), `${k}x${n}, ${m} rows`).toBe(alone);
      }
    });
  });

  it("batching - scoring a row alone or with other rows gives the same log-probs bit for bit, every kind", () => {
    const prompts = [encode("The"), encode("A longer prompt"), encode("Mid size"), encode("The")];
    const completions = [encode(" film"), encode(" that goes on and on"), encode("!"), encode(" end of it")];
    for (const [kind, model] of all) {
      const together = sequenceLogprobs(model, prompts, completions);
      const alone = prompts.map((p, i) => sequenceLogprobs(model, [p], [completions[i] as number[]])[0]);
      expect(JSON.stringify(together), kind).toBe(JSON.stringify(alone));
    }
  });
});
