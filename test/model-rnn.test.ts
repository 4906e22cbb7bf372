import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import { Adam } from "../services/core/src/learn/adam.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { countModelParameters, type WeightMap } from "../services/core/src/model/causal-lm.js";
import {
  checkpointFromModel,
  decodeCheckpoint,
  encodeCheckpoint,
  loadCheckpoint,
  modelFromCheckpoint,
} from "../services/core/src/model/checkpoint.js";
import { maskedCrossEntropy } from "../services/core/src/model/loss.js";
import { pretrain } from "../services/core/src/model/pretrain.js";
import { RnnLM } from "../services/core/src/model/rnn.js";
import { type RnnConfig, type RnnKind, validateRnnConfig } from "../services/core/src/model/rnn-config.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import { BOS, encode } from "../services/core/src/model/tokenizer.js";
import { policyModelLoader } from "../services/policy/policy-model.js";
import {
  expectFiniteDifferenceGradients,
  maxAbsDiff,
  sigmoid,
  TEST_SAMPLING,
} from "./helpers/model-checks.js";

const KINDS: RnnKind[] = ["gru", "lstm"];
const tiny = (kind: RnnKind): RnnConfig => ({
  kind,
  vocabSize: 258,
  contextLength: 24,
  dModel: 8,
  hidden: 12,
  nLayers: 2,
});

/**
 * The cell equations written out with scalar loops in float64 (PyTorch's GRU/LSTM definitions):
 * GRU  r = σ(x W_ir + b_ir + h W_hr + b_hr), z = σ(… W_iz …), n = tanh(x W_in + b_in + r (h W_hn + b_hn)),
 *      h' = (1 − z) n + z h
 * LSTM i, f, o = σ(…), g = tanh(…), c' = f c + i g, h' = o tanh(c')
 * Returns logits [T][V] of one row.
 */
function referenceLogits(config: RnnConfig, w: WeightMap, tokens: number[]): number[][] {
  const { hidden: H, nLayers, vocabSize: V, kind } = config;
  const get = (name: string) => (w.get(name) as { data: Float32Array }).data;
  const G = kind === "gru" ? 3 : 4;
  // row-vector × [in, out] matrix
  const affine = (x: number[], m: Float32Array, b: Float32Array, out: number) =>
    Array.from({ length: out }, (_, j) =>
      x.reduce((s, xi, i) => s + xi * (m[i * out + j] as number), b[j] as number),
    );
  let xs = tokens.map((id) => Array.from(get("wte").subarray(id * config.dModel, (id + 1) * config.dModel)));
  for (let l = 0; l < nLayers; l++) {
    let h = new Array(H).fill(0) as number[];
    let c = new Array(H).fill(0) as number[];
    const outs: number[][] = [];
    for (const x of xs) {
      const a = affine(x, get(`h.${l}.weight_ih`), get(`h.${l}.bias_ih`), G * H);
      const u = affine(h, get(`h.${l}.weight_hh`), get(`h.${l}.bias_hh`), G * H);
      const hn: number[] = [];
      const cn: number[] = [];
      for (let k = 0; k < H; k++) {
        if (kind === "gru") {
          const r = sigmoid((a[k] as number) + (u[k] as number));
          const z = sigmoid((a[H + k] as number) + (u[H + k] as number));
          const n = Math.tanh((a[2 * H + k] as number) + r * (u[2 * H + k] as number));
          hn.push((1 - z) * n + z * (h[k] as number));
        } else {
          const i = sigmoid((a[k] as number) + (u[k] as number));
          const f = sigmoid((a[H + k] as number) + (u[H + k] as number));
          const g = Math.tanh((a[2 * H + k] as number) + (u[2 * H + k] as number));
          const o = sigmoid((a[3 * H + k] as number) + (u[3 * H + k] as number));
          cn.push(f * (c[k] as number) + i * g);
          hn.push(o * Math.tanh(cn[k] as number));
        }
      }
      h = hn;
      c = cn;
      outs.push(h);
    }
    xs = outs;
  }
  return xs.map((hRow) => affine(hRow, get("lm_head.weight"), get("lm_head.bias"), V));
}

describe("rnn", () => {
  const models = new Map<RnnKind, RnnLM>();
  beforeAll(async () => {
    await initBackend("wasm");
    for (const kind of KINDS) models.set(kind, new RnnLM(tiny(kind), 21));
  });
  afterAll(() => {
    for (const m of models.values()) m.dispose();
  });
  const model = (kind: RnnKind) => models.get(kind) as RnnLM;

  it("rnn - config validation, parameter names and counts", () => {
    expect(() => validateRnnConfig({ ...tiny("gru"), kind: "rnn" })).toThrow(ValidationError);
    expect(() => validateRnnConfig({ ...tiny("gru"), hidden: 0 })).toThrow(ValidationError);
    // GRU: V·D + Σ_l 3H(in + H + 2) + H·V + V
    const c = tiny("gru");
    const gru = 258 * 8 + 36 * (8 + 12 + 2) + 36 * (12 + 12 + 2) + 12 * 258 + 258;
    expect(countModelParameters(c)).toBe(gru);
    expect(countModelParameters({ ...c, kind: "lstm" })).toBe(gru + 12 * (8 + 12 + 2) + 12 * (12 + 12 + 2));
    expect([...model("lstm").params.keys()]).toEqual([
      "wte",
      "h.0.weight_ih",
      "h.0.weight_hh",
      "h.0.bias_ih",
      "h.0.bias_hh",
      "h.1.weight_ih",
      "h.1.weight_hh",
      "h.1.bias_ih",
      "h.1.bias_hh",
      "lm_head.weight",
      "lm_head.bias",
    ]);
    // same seed → same weights; LSTM forget-gate bias starts at 1
    const again = new RnnLM(tiny("lstm"), 21);
    expect(again.getWeights().get("h.1.weight_hh")?.data).toEqual(
      model("lstm").getWeights().get("h.1.weight_hh")?.data,
    );
    expect(Array.from(again.getWeights().get("h.0.bias_ih")?.data.subarray(12, 24) ?? [])).toEqual(
      new Array(12).fill(1),
    );
    again.dispose();
  });

  for (const kind of KINDS) {
    it(`rnn - ${kind} forward equals the cell equations computed by hand`, () => {
      const m = model(kind);
      const row = [BOS, ...encode("cells!")];
      const want = referenceLogits(m.config, m.getWeights(), row);
      for (const ops of ["train", "inference", "reference"] as const) {
        const got = tf.tidy(
          () =>
            m
              .forward(tf.tensor2d([row], [1, row.length], "int32"), undefined, { ops })
              .arraySync()[0] as number[][],
        );
        expect(maxAbsDiff(got.flat(), want.flat())).toBeLessThan(2e-5);
      }
    });

    it(`rnn - ${kind} gradients equal stock autodiff and finite differences`, () => {
      const m = model(kind);
      const x = tf.tensor2d(
        [
          [BOS, 72, 105, 33, 10],
          [BOS, 65, 66, 67, 68],
        ],
        [2, 5],
        "int32",
      );
      const y = tf.tensor2d(
        [
          [72, 105, 33, 10, 257],
          [65, 66, 67, 68, 69],
        ],
        [2, 5],
        "int32",
      );
      const mask = tf.tensor2d(
        [
          [1, 1, 1, 1, 0],
          [1, 1, 1, 1, 1],
        ],
        [2, 5],
      );
      const vars = m.variables();
      const lossOf = (ops: "train" | "reference") => () =>
        maskedCrossEntropy(m.forward(x, undefined, { ops }), y, mask);
      const train = tf.variableGrads(lossOf("train"), vars);
      const ref = tf.variableGrads(lossOf("reference"), vars);
      for (const v of vars) {
        const a = (train.grads[v.name] as tf.Tensor).dataSync();
        const b = (ref.grads[v.name] as tf.Tensor).dataSync();
        expect(maxAbsDiff(a, b)).toBeLessThan(1e-5);
      }
      // central differences in float64 of the float32 loss, on a few entries of every parameter
      expectFiniteDifferenceGradients(vars, train.grads, lossOf("reference"));
      tf.dispose([
        x,
        y,
        mask,
        train.value,
        ref.value,
        ...Object.values(train.grads),
        ...Object.values(ref.grads),
      ]);
    });

    it(`rnn - ${kind} step()-by-step logits equal forward() logits`, () => {
      const m = model(kind);
      const row = [BOS, ...encode("state carries")];
      const full = tf.tidy(
        () => m.forward(tf.tensor2d([row], [1, row.length], "int32")).arraySync()[0] as number[][],
      );
      const before = tf.memory().numTensors;
      const p = 5;
      const ones = (n: number) => tf.ones([1, n]) as tf.Tensor2D;
      const run = (ids: number[], past: object | null, total: number) =>
        tf.tidy(() =>
          m.step(tf.tensor2d([ids], [1, ids.length], "int32"), tf.zeros([1, ids.length]), ones(total), past),
        );
      let out = run(row.slice(0, p), null, p);
      const got = out.logits.arraySync()[0] as number[][];
      out.logits.dispose();
      for (let i = p; i < row.length; i++) {
        const next = run([row[i] as number], out.cache, i + 1);
        tf.dispose(out.cache as tf.TensorContainer);
        got.push((next.logits.arraySync()[0] as number[][])[0] as number[]);
        next.logits.dispose();
        out = next;
      }
      tf.dispose(out.cache as tf.TensorContainer);
      expect(tf.memory().numTensors).toBe(before);
      expect(maxAbsDiff(got.flat(), full.flat())).toBeLessThan(1e-5);
    });

    it(`rnn - ${kind} left padding does not change a row (step, generate, scoring)`, async () => {
      const m = model(kind);
      const short = [BOS, ...encode("Hi")];
      const long = [BOS, ...encode("A longer one")];
      const pad = long.length - short.length;
      const alone = tf.tidy(() => {
        const out = m.step(
          tf.tensor2d([short], [1, short.length], "int32"),
          tf.zeros([1, short.length]),
          tf.ones([1, short.length]),
          null,
        );
        return out.logits.arraySync()[0]?.at(-1) as number[];
      });
      const batched = tf.tidy(() => {
        const toks = [[...new Array(pad).fill(0), ...short], long];
        const mask = [[...new Array(pad).fill(0), ...short.map(() => 1)], long.map(() => 1)];
        const out = m.step(
          tf.tensor2d(toks, [2, long.length], "int32"),
          tf.zeros([2, long.length]),
          tf.tensor2d(mask),
          null,
        );
        return out.logits.arraySync()[0]?.at(-1) as number[];
      });
      expect(maxAbsDiff(batched, alone)).toBeLessThan(1e-5);
      // whole generations: the short prompt alone vs. batched with longer ones
      const prompts = [encode("Hi"), encode("A longer one"), encode("Mid size")];
      const solo = await generate(m, [prompts[0] as number[]], TEST_SAMPLING);
      const together = await generate(m, prompts, TEST_SAMPLING);
      expect(together[0]?.tokens).toEqual(solo[0]?.tokens);
      expect(maxAbsDiff(together[0]?.logprobs ?? [], solo[0]?.logprobs ?? [])).toBeLessThan(1e-5);
      // right-padded scoring recomputes the sampled log-probs
      const again = sequenceLogprobs(
        m,
        prompts,
        together.map((o) => o.tokens),
      );
      together.forEach((o, r) => {
        expect(maxAbsDiff(o.logprobs, again[r] as number[])).toBeLessThan(1e-4);
      });
    });

    it(`rnn - ${kind} checkpoint round trip and Policy loader`, async () => {
      const m = model(kind);
      const bytes = encodeCheckpoint(checkpointFromModel(m, { step: "3" }));
      const back = decodeCheckpoint(bytes);
      expect(back.kind).toBe(kind);
      expect(back.config).toEqual(m.config);
      expect(back.metadata).toEqual({ step: "3" });
      const copy = modelFromCheckpoint(back);
      expect(copy.kind).toBe(kind);
      const x = tf.tensor2d([[BOS, 1, 2, 3]], [1, 4], "int32");
      const [a, b] = [m.forward(x), copy.forward(x)];
      expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBe(0);
      tf.dispose([x, a, b]);
      copy.dispose();
      // a config of one kind under the other kind's name is refused
      const other = kind === "gru" ? "lstm" : "gru";
      expect(() => encodeCheckpoint({ ...checkpointFromModel(m), kind: other })).toThrow(ValidationError);
      const loaded = policyModelLoader.fromBlob(bytes);
      expect(loaded.kind).toBe(kind);
      expect(loaded.parameterCount).toBe(countModelParameters(m.config));
      const out = await loaded.generate([encode("Hi")], TEST_SAMPLING);
      expect(out[0]?.tokens).toEqual((await generate(m, [encode("Hi")], TEST_SAMPLING))[0]?.tokens);
      loaded.dispose();
    });

    it(`rnn - ${kind} generate() is seeded-deterministic`, async () => {
      const m = model(kind);
      const prompts = [encode("The"), encode("The"), []];
      const a = await generate(m, prompts, TEST_SAMPLING);
      const b = await generate(m, prompts, TEST_SAMPLING);
      const c = await generate(m, prompts, { ...TEST_SAMPLING, seed: 4 });
      expect(b.map((o) => o.tokens)).toEqual(a.map((o) => o.tokens));
      expect(a[0]?.tokens).not.toEqual(a[1]?.tokens);
      expect(c.map((o) => o.tokens)).not.toEqual(a.map((o) => o.tokens));
    });
  }

  it("rnn - the shipped GRU checkpoint loads as a GRU and samples", async () => {
    const c = await loadCheckpoint("checkpoints/gru/model.safetensors");
    expect(c.kind).toBe("gru");
    const m = modelFromCheckpoint(c);
    expect(m.kind).toBe("gru");
    const out = await generate(m, [encode("The man")], { ...TEST_SAMPLING, maxNewTokens: 16 });
    expect(out[0]?.tokens.length).toBe(16);
    m.dispose();
  });

  it("rnn - a few pre-training steps lower the loss, with no tensor leak across steps", async () => {
    const text = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat.";
    const sentences = { train: new Array(40).fill(text), heldOut: new Array(8).fill(text) };
    for (const kind of KINDS) {
      const counts: number[] = [];
      const losses: number[] = [];
      const trained = await pretrain({
        config: { ...tiny(kind), contextLength: 16, hidden: 32, nLayers: 1 },
        steps: 30,
        batchSize: 8,
        lr: 0.02,
        seed: 2,
        evalEvery: 30,
        evalBatches: 1,
        sentences,
        onLog: (e) => {
          losses.push(e.loss);
          counts.push(tf.memory().numTensors);
        },
      });
      expect(trained.kind).toBe(kind);
      expect((losses.at(-1) as number) < (losses[0] as number) * 0.7).toBe(true);
      expect(new Set(counts.slice(2)).size).toBe(1);
      trained.dispose();
    }
    // an explicit training loop as the learner runs it: tensors flat across steps
    const m = new RnnLM(tiny("lstm"), 5);
    const opt = new Adam({ learningRate: 1e-3 });
    const counts: number[] = [];
    for (let i = 0; i < 4; i++) {
      const x = tf.tensor2d([[BOS, 1, 2, 3, 4]], [1, 5], "int32");
      const y = tf.tensor2d([[1, 2, 3, 4, 5]], [1, 5], "int32");
      const mk = tf.ones([1, 5]) as tf.Tensor2D;
      const { value, grads } = tf.variableGrads(() => maskedCrossEntropy(m.forward(x), y, mk), m.variables());
      opt.applyGradients(
        m.variables(),
        m.variables().map((v) => grads[v.name] as tf.Tensor),
      );
      tf.dispose([x, y, mk, value, ...Object.values(grads)]);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts.slice(1)).size).toBe(1);
    opt.dispose();
    m.dispose();
  });
});
