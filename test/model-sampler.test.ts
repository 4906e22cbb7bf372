import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { Rng } from "../services/core/src/model/rng.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import { chooseToken } from "../services/core/src/model/sampling.js";
import { BOS, EOS, encode } from "../services/core/src/model/tokenizer.js";
import { disposeCache, TransformerLM } from "../services/core/src/model/transformer.js";
import { TEST_SAMPLING } from "./helpers/model-checks.js";

const TINY = { vocabSize: 258, contextLength: 24, dModel: 16, nLayers: 2, nHeads: 2 };
const PROMPTS = [encode("The"), encode("A longer prompt"), [], encode("Hi")];

describe("sampler", () => {
  let model: TransformerLM;
  beforeAll(async () => {
    await initBackend("wasm");
    model = new TransformerLM(TINY, 11);
  });
  afterAll(() => model.dispose());

  it("sampler - generation log-probs equal a sequenceLogprobs recompute", async () => {
    const before = tf.memory().numTensors;
    const out = await generate(model, PROMPTS, TEST_SAMPLING);
    expect(tf.memory().numTensors).toBe(before);
    const again = sequenceLogprobs(
      model,
      PROMPTS,
      out.map((o) => o.tokens),
    );
    out.forEach((o, r) => {
      expect(o.tokens.length).toBe(8);
      expect(o.finishReason).toBe("length");
      o.logprobs.forEach((lp, j) => {
        expect(Math.abs(lp - (again[r]?.[j] as number))).toBeLessThan(1e-4);
      });
    });
  });

  it("sampler - KV-cache logits equal a full recompute", async () => {
    const row = [BOS, ...encode("cache me if")];
    const full = tf.tidy(
      () => model.forward(tf.tensor2d([row], [1, row.length], "int32")).arraySync()[0] as number[][],
    );
    const mask = (n: number) => tf.ones([1, n]) as tf.Tensor2D;
    const p = 5;
    let step = model.step(
      tf.tensor2d([row.slice(0, p)], [1, p], "int32"),
      tf.tensor2d([[0, 1, 2, 3, 4]], [1, p], "int32"),
      mask(p),
      null,
    );
    for (let j = p; j < row.length; j++) {
      const last = step.logits.arraySync()[0]?.at(-1) as number[];
      const ref = full[j - 1] as number[];
      last.forEach((v, k) => {
        expect(Math.abs(v - (ref[k] as number))).toBeLessThan(1e-4);
      });
      step.logits.dispose();
      const next = model.step(
        tf.tensor2d([[row[j] as number]], [1, 1], "int32"),
        tf.tensor2d([[j]], [1, 1], "int32"),
        mask(j + 1),
        step.cache,
      );
      disposeCache(step.cache);
      step = next;
    }
    const last = step.logits.arraySync()[0]?.at(-1) as number[];
    last.forEach((v, k) => {
      expect(Math.abs(v - ((full.at(-1) as number[])[k] as number))).toBeLessThan(1e-4);
    });
    step.logits.dispose();
    disposeCache(step.cache);
  });

  it("sampler - the same seed gives the same tokens, another seed different ones", async () => {
    const a = await generate(model, PROMPTS, TEST_SAMPLING);
    const b = await generate(model, PROMPTS, TEST_SAMPLING);
    const c = await generate(model, PROMPTS, { ...TEST_SAMPLING, seed: 4 });
    expect(b).toEqual(a);
    expect(c.map((o) => o.tokens)).not.toEqual(a.map((o) => o.tokens));
    // Row r draws from stream (seed, r): its sample does not depend on the other rows' padding.
    const solo = await generate(model, [PROMPTS[0] as number[]], TEST_SAMPLING);
    expect(solo[0]?.tokens).toEqual(a[0]?.tokens);
  });

  it("sampler - greedy decoding takes the argmax of a full forward pass", async () => {
    const out = await generate(model, [encode("Gr")], { ...TEST_SAMPLING, temperature: 0, maxNewTokens: 6 });
    const row = [BOS, ...encode("Gr")];
    for (const tok of out[0]?.tokens ?? []) {
      const logits = tf.tidy(
        () =>
          model
            .forward(tf.tensor2d([row], [1, row.length], "int32"))
            .arraySync()[0]
            ?.at(-1) as number[],
      );
      expect(tok).toBe(logits.indexOf(Math.max(...logits)));
      row.push(tok);
    }
  });

  it("sampler - top-k 1 equals greedy; top-p keeps the most likely tokens", async () => {
    const greedy = await generate(model, PROMPTS, { ...TEST_SAMPLING, temperature: 0 });
    const top1 = await generate(model, PROMPTS, { ...TEST_SAMPLING, temperature: 1.7, topK: 1 });
    expect(top1.map((o) => o.tokens)).toEqual(greedy.map((o) => o.tokens));
    const z = Float32Array.from([0, 5, 4.9, -3]);
    const rng = new Rng(1);
    const picks = new Set(
      Array.from({ length: 200 }, () => chooseToken(z, { ...TEST_SAMPLING, topP: 0.6 }, rng)),
    );
    expect([...picks].sort()).toEqual([1, 2]);
    const tiny = new Set(
      Array.from({ length: 50 }, () => chooseToken(z, { ...TEST_SAMPLING, topP: 0.01 }, rng)),
    );
    expect([...tiny]).toEqual([1]);
  });

  it("sampler - rows stop at EOS or at the context length", async () => {
    // Make EOS overwhelmingly likely: constant final-LN output times a large EOS column.
    const w = model.getWeights();
    const head = w.get("lm_head.weight") as { shape: number[]; data: Float32Array };
    const lnBias = w.get("ln_f.bias") as { shape: number[]; data: Float32Array };
    const h2 = head.data.slice();
    for (let i = 0; i < TINY.dModel; i++) h2[i * TINY.vocabSize + EOS] = 100;
    const biased = new TransformerLM(TINY, 11);
    biased.setWeights(
      new Map([
        ...w,
        ["lm_head.weight", { shape: head.shape, data: h2 }],
        ["ln_f.bias", { shape: lnBias.shape, data: lnBias.data.slice().fill(1) }],
      ]),
    );
    const eos = await generate(biased, [encode("x"), encode("yy")], { ...TEST_SAMPLING, stopAtEos: true });
    for (const o of eos) {
      expect(o.finishReason).toBe("eos");
      expect(o.tokens).toEqual([EOS]);
    }
    biased.dispose();
    const long = encode("x".repeat(TINY.contextLength - 4));
    const ctx = await generate(model, [long, encode("y")], { ...TEST_SAMPLING, maxNewTokens: 10 });
    expect(ctx[0]?.finishReason).toBe("context");
    expect(ctx[0]?.tokens.length).toBe(3);
    expect(ctx[1]?.finishReason).toBe("length");
    expect(ctx[1]?.tokens.length).toBe(10);
  });

  it("sampler - prompts and completions that do not fit are ValidationErrors", async () => {
    await expect(generate(model, [encode("z".repeat(TINY.contextLength))], TEST_SAMPLING)).rejects.toThrow(
      ValidationError,
    );
    await expect(generate(model, [[300]], TEST_SAMPLING)).rejects.toThrow(ValidationError);
    await expect(generate(model, [[1]], { ...TEST_SAMPLING, topP: 0 })).rejects.toThrow(ValidationError);
    expect(() => sequenceLogprobs(model, [encode("ab")], [encode("c".repeat(TINY.contextLength))])).toThrow(
      ValidationError,
    );
    expect(await generate(model, [], TEST_SAMPLING)).toEqual([]);
    expect(sequenceLogprobs(model, [encode("ab")], [[]])).toEqual([[]]);
  });

  it("sampler - an aborted signal stops generation between tokens", async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const run = generate(
      model,
      [encode("ab")],
      { ...TEST_SAMPLING, maxNewTokens: 10, stopAtEos: false },
      (_row, id) => {
        seen.push(id);
        if (seen.length === 2) controller.abort(new Error("caller gave up"));
      },
      controller.signal,
    );
    await expect(run).rejects.toThrow("caller gave up");
    expect(seen).toHaveLength(2);
  });
});
