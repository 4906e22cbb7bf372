import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ValidationError, WeightsError } from "../services/core/src/errors.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { countModelParameters } from "../services/core/src/model/causal-lm.js";
import { maskedCrossEntropy } from "../services/core/src/model/loss.js";
import { TransformerLM } from "../services/core/src/model/transformer.js";
import {
  DEFAULT_TRANSFORMER_CONFIG,
  validateTransformerConfig,
} from "../services/core/src/model/transformer-config.js";
import { syntheticLmBatch } from "./helpers/model-checks.js";

const TINY = { vocabSize: 258, contextLength: 16, dModel: 16, nLayers: 2, nHeads: 2 };

function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += ((a[i] as number) - (b[i] as number)) ** 2;
    den += (b[i] as number) ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

describe("transformer", () => {
  let model: TransformerLM;
  beforeAll(async () => {
    await initBackend("wasm");
    model = new TransformerLM(TINY, 7);
  });
  afterAll(() => model.dispose());

  it("transformer - config validation and parameter count", () => {
    expect(countModelParameters(DEFAULT_TRANSFORMER_CONFIG)).toBe(867584);
    expect(() => validateTransformerConfig({ ...TINY, nHeads: 3 })).toThrow(ValidationError);
    expect(() => validateTransformerConfig({ ...TINY, dModel: 0 })).toThrow(ValidationError);
    expect(() => validateTransformerConfig({ ...TINY, nLayers: 1.5 })).toThrow(ValidationError);
  });

  it("transformer - the same seed gives the same weights, another seed different ones", () => {
    const a = new TransformerLM(TINY, 7);
    const b = new TransformerLM(TINY, 8);
    const wa = a.getWeights();
    const w0 = model.getWeights();
    expect(wa.get("h.1.attn.c_attn.weight")?.data).toEqual(w0.get("h.1.attn.c_attn.weight")?.data);
    expect(b.getWeights().get("wte")?.data).not.toEqual(w0.get("wte")?.data);
    expect(w0.get("h.0.ln_1.weight")?.data.every((x) => x === 1)).toBe(true);
    a.dispose();
    b.dispose();
  });

  it("transformer - forward gives [B, T, V] logits and leaks no tensors", () => {
    const x = tf.tensor2d(
      [
        [256, 72, 105, 33],
        [256, 65, 66, 67],
      ],
      [2, 4],
      "int32",
    );
    const before = tf.memory().numTensors;
    const logits = model.forward(x);
    expect(logits.shape).toEqual([2, 4, 258]);
    logits.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => model.forward(tf.zeros([1, 17], "int32") as tf.Tensor2D)).toThrow(ValidationError);
    x.dispose();
  });

  it("transformer - custom gradients equal stock autodiff to 1e-5 relative", () => {
    const b = 3;
    const t = 12;
    const { x, y, mask: m } = syntheticLmBatch(b, t, 2);
    const grads = (ops: "train" | "reference") =>
      tf.variableGrads(
        () => maskedCrossEntropy(model.forward(x, undefined, { ops }), y, m),
        model.variables(),
      );
    const fast = grads("train");
    const stock = grads("reference");
    expect(
      Math.abs((fast.value.dataSync()[0] as number) - (stock.value.dataSync()[0] as number)),
    ).toBeLessThan(1e-5);
    for (const name of Object.keys(stock.grads)) {
      const g = fast.grads[name] as tf.Tensor;
      expect(relError(g.dataSync(), (stock.grads[name] as tf.Tensor).dataSync()), name).toBeLessThan(1e-5);
    }
    tf.dispose([
      x,
      y,
      m,
      fast.value,
      stock.value,
      ...Object.values(fast.grads),
      ...Object.values(stock.grads),
    ]);
  });

  it("transformer - inference ops give the training forward's logits", () => {
    const x = tf.tensor2d([[256, 5, 6, 7, 8, 9, 10, 11, 12, 13]], [1, 10], "int32");
    const a = tf.tidy(() => model.forward(x).dataSync());
    const b = tf.tidy(() => model.forward(x, undefined, { ops: "inference" }).dataSync());
    expect(relError(b, a)).toBeLessThan(1e-5);
    x.dispose();
  });

  it("transformer - left padding with positions and key mask leaves a row's logits unchanged", () => {
    const row = [256, 84, 104, 101, 32, 106];
    const alone = tf.tidy(
      () => model.forward(tf.tensor2d([row], [1, 6], "int32")).arraySync()[0] as number[][],
    );
    const pad = 4;
    const padded = tf.tidy(() => {
      const tokens = tf.tensor2d(
        [
          [...Array(pad).fill(0), ...row],
          [256, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ],
        [2, 10],
        "int32",
      );
      const positions = tf.tensor2d(
        [
          [0, 0, 0, 0, 0, 1, 2, 3, 4, 5],
          [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ],
        [2, 10],
        "int32",
      );
      const keyMask = tf.tensor2d([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1], Array(10).fill(1)], [2, 10]);
      return model.forward(tokens, positions, { keyMask }).arraySync()[0] as number[][];
    });
    for (let j = 0; j < row.length; j++) {
      expect(relError(padded[pad + j] as number[], alone[j] as number[])).toBeLessThan(1e-5);
    }
  });

  it("transformer - right padding does not change earlier positions (causal mask)", () => {
    const a = tf.tidy(
      () => model.forward(tf.tensor2d([[256, 70, 71]], [1, 3], "int32")).arraySync()[0] as number[][],
    );
    const b = tf.tidy(
      () => model.forward(tf.tensor2d([[256, 70, 71, 0, 0]], [1, 5], "int32")).arraySync()[0] as number[][],
    );
    for (let j = 0; j < 3; j++) expect(relError(b[j] as number[], a[j] as number[])).toBeLessThan(1e-6);
  });

  it("transformer - setWeights round-trips and rejects mismatches with WeightsError", () => {
    const other = new TransformerLM(TINY, 99);
    other.setWeights(model.getWeights());
    const x = tf.tensor2d([[256, 1, 2]], [1, 3], "int32");
    const l1 = tf.tidy(() => model.forward(x).dataSync());
    const l2 = tf.tidy(() => other.forward(x).dataSync());
    expect(relError(l2, l1)).toBe(0);
    const w = model.getWeights();
    const bad = new Map(w);
    bad.set("wte", { shape: [10, 16], data: new Float32Array(160) });
    expect(() => other.setWeights(bad)).toThrow(WeightsError);
    const missing = new Map(w);
    missing.delete("ln_f.bias");
    expect(() => other.setWeights(missing)).toThrow(WeightsError);
    const extra = new Map(w);
    extra.set("nope", { shape: [1], data: new Float32Array(1) });
    expect(() => other.setWeights(extra)).toThrow(WeightsError);
    // A rejected update leaves the model untouched.
    expect(
      relError(
        tf.tidy(() => other.forward(x).dataSync()),
        l1,
      ),
    ).toBe(0);
    x.dispose();
    other.dispose();
  });
});
