/**
 * Decoding with the Hugging Face kinds: the KV-cache `step` and the row decoder give the full
 * forward's logits token by token, left padding with per-row positions changes nothing, and the
 * project's samplers (continuous batching, scoring) run them with batch-invariant results.
 */
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { type CausalLM, type DecodingState, disposeState } from "../services/core/src/model/causal-lm.js";
import { ContinuousSampler } from "../services/core/src/model/continuous-sampler.js";
import type { HfLlamaConfig } from "../services/core/src/model/hf-config.js";
import { HfLlamaLM } from "../services/core/src/model/hf-llama.js";
import { modelFromHfDir } from "../services/core/src/model/hf-model-dir.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import type { SamplingParams } from "../services/core/src/model/sampling.js";
import { encode } from "../services/core/src/model/tokenizer.js";
import { scaledError } from "./helpers/model-checks.js";

const FIXTURES = path.join(import.meta.dirname, "fixtures", "hf");
const ROW = [3, 17, 33, 2, 60, 41, 9, 12, 7, 30, 11];
const BASE: SamplingParams = {
  maxNewTokens: 10,
  temperature: 1,
  topK: 0,
  topP: 1,
  seed: 5,
  stopAtEos: false,
};

/** A random Qwen2-shaped model over the byte vocabulary (the samplers' tests encode text as bytes). */
const BYTE_QWEN: HfLlamaConfig = {
  kind: "hf-llama",
  family: "qwen2",
  vocabSize: 258,
  contextLength: 40,
  dModel: 24,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 6,
  ffnSize: 32,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tiedHead: false,
  bosTokenId: 256,
  eosTokenIds: [257],
};

function fullLogits(model: CausalLM, row: number[]): Float32Array {
  return tf
    .tidy(() => model.forward(tf.tensor2d([row], undefined, "int32"), undefined, { ops: "inference" }))
    .dataSync() as Float32Array;
}

describe("hf decoding", () => {
  const models: [string, CausalLM][] = [];
  beforeAll(async () => {
    await initBackend("wasm");
    for (const name of ["gpt2", "llama", "llama-tied", "qwen2"])
      models.push([name, await modelFromHfDir(path.join(FIXTURES, name))]);
  });
  afterAll(() => {
    for (const [, m] of models) m.dispose();
  });

  it("hf decoding - step with a KV cache equals the full forward token by token", () => {
    for (const [name, model] of models) {
      const v = model.config.vocabSize;
      const want = fullLogits(model, ROW);
      let past: DecodingState | null = null;
      // a 3-token prefix first, then one token at a time
      for (const [from, to] of [[0, 3], ...ROW.slice(3).map((_, i) => [3 + i, 4 + i])] as [
        number,
        number,
      ][]) {
        const out = model.step(
          tf.tensor2d([ROW.slice(from, to)], undefined, "int32"),
          tf.tensor2d([Array.from({ length: to - from }, (_, i) => from + i)], undefined, "int32"),
          tf.ones([1, to]),
          past,
        );
        disposeState(past);
        past = out.cache;
        const err = scaledError(out.logits.dataSync(), want.subarray(from * v, to * v));
        expect(err, `${name} at ${from}`).toBeLessThan(1e-5);
        out.logits.dispose();
      }
      disposeState(past);
    }
  });

  it("hf decoding - the row decoder's prefill and steps equal the full forward", () => {
    for (const [name, model] of models) {
      const v = model.config.vocabSize;
      const want = fullLogits(model, ROW);
      const decoder = model.decoder(3);
      // the prompt ROW[0..4) in slots 0 and 2; slot 1 stays free
      const first = decoder.prefill([ROW.slice(0, 4)], [[0, 2]]);
      expect(scaledError(first, want.subarray(3 * v, 4 * v)), name).toBeLessThan(1e-5);
      for (let p = 4; p < ROW.length; p++) {
        const out = decoder.step(
          new Int32Array([ROW[p] as number, 0, ROW[p] as number]),
          new Int32Array([p, 0, p]),
        );
        for (const slot of [0, 2])
          expect(
            scaledError(out.subarray(slot * v, (slot + 1) * v), want.subarray(p * v, (p + 1) * v)),
          ).toBeLessThan(1e-5);
      }
      decoder.dispose();
    }
  });

  it("hf decoding - a left-padded row with per-row positions gives the unpadded row's logits", () => {
    for (const [name, model] of models) {
      const v = model.config.vocabSize;
      const want = fullLogits(model, ROW.slice(0, 6));
      const got = tf.tidy(() =>
        model.forward(
          tf.tensor2d([[0, 0, ...ROW.slice(0, 6)]], undefined, "int32"),
          tf.tensor2d([[0, 0, 0, 1, 2, 3, 4, 5]], undefined, "int32"),
          { keyMask: tf.tensor2d([[0, 0, 1, 1, 1, 1, 1, 1]]), ops: "inference" },
        ),
      );
      expect(scaledError(got.dataSync().subarray(2 * v), want), name).toBeLessThan(1e-5);
      got.dispose();
    }
  });

  it("hf decoding - continuous batching gives each request its tokens alone, bit for bit, and scoring agrees", async () => {
    const model = new HfLlamaLM(BYTE_QWEN, 3);
    try {
      const requests = [
        { prompts: [encode("Hello there")], p: BASE },
        { prompts: [encode("The film was"), encode("The film was")], p: { ...BASE, seed: 9 } },
        { prompts: [encode("A"), encode("A longer prompt here")], p: { ...BASE, temperature: 0 } },
      ];
      const alone = [];
      for (const r of requests) alone.push(await generate(model, r.prompts, r.p));
      const sampler = new ContinuousSampler(model, 8);
      const batched = await Promise.all(requests.map((r) => sampler.submit(r.prompts, r.p)));
      await sampler.idle();
      expect(JSON.stringify(batched)).toBe(JSON.stringify(alone));
      // the sampled log-probs are the scored ones
      const first = alone[0]?.[0];
      const scored = sequenceLogprobs(model, [encode("Hello there")], [first?.tokens ?? []])[0] ?? [];
      expect(scaledError(scored, first?.logprobs ?? [])).toBeLessThan(1e-5);
    } finally {
      model.dispose();
    }
  });
});
