/**
 * The fused causal attention (attention-kernels.ts, native/blas/attention.c) against the tfjs ops
 * it replaces: values and gradients of one layer's attention on its projection rows, and a whole
 * Transformer's loss and gradients with training ops against stock autodiff, on the wasm backend
 * with its own kernels (no fused attention: the tfjs ops run) and, where the addon is built, with
 * OpenBLAS and the fused kernels; and the addon refuses arrays too small for what it would touch.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { causalAttention } from "../services/core/src/model/attention-kernels.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { maskedCrossEntropy } from "../services/core/src/model/loss.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import { TransformerLM } from "../services/core/src/model/transformer.js";
import { attentionBias, mergeHeads, qkvHeads } from "../services/core/src/model/transformer-attention.js";
import { setWasmMatMul, wasmMatMulKind } from "../services/core/src/model/wasm-kernels.js";
import { bytesEqual, scaledError, syntheticLmBatch } from "./helpers/model-checks.js";

const blas = loadBlas({}).addon;
const kinds = blas === null ? (["wasm"] as const) : (["wasm", "blas"] as const);

/** softmax(q kᵀ / √D + causal bias) v as stock tfjs ops (transpose flags, autodiff throughout). */
function reference(qkv: tf.Tensor2D, b: number, h: number): tf.Tensor2D {
  const [n, width] = qkv.shape;
  const [s, c] = [n / b, width / 3];
  const d = c / h;
  const [q, k, v] = qkvHeads(qkv, b, s, h, d) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  const scores = tf.add(
    tf.matMul(tf.mul(q, 1 / Math.sqrt(d)), k, false, true),
    attentionBias(b, h, s, 0, null),
  );
  return mergeHeads(tf.matMul(tf.softmax(scores), v) as tf.Tensor4D, b, s, c);
}

/** The attention the model runs on the active kernels: fused where registered, else the tfjs ops. */
const active = (qkv: tf.Tensor2D, b: number, h: number) => causalAttention(qkv, b, h) ?? reference(qkv, b, h);

/** Values of f(qkv) and ∂Σ(f · dy)/∂qkv. */
function valueAndGrad(f: (x: tf.Tensor2D) => tf.Tensor2D, qkv: tf.Tensor2D, dy: tf.Tensor) {
  return tf.tidy(() => ({
    value: Array.from(f(qkv).dataSync()),
    grad: Array.from(
      tf
        .grad((x: tf.Tensor) => tf.sum(tf.mul(f(x as tf.Tensor2D), dy)))(qkv)
        .dataSync(),
    ),
  }));
}

describe("attention", () => {
  let initial: ReturnType<typeof wasmMatMulKind>;
  beforeAll(async () => {
    await initBackend("wasm");
    initial = wasmMatMulKind();
  });
  afterAll(() => setWasmMatMul(initial, blas));

  for (const kind of kinds) {
    it(`attention - values and gradients equal the tfjs ops (${kind})`, () => {
      setWasmMatMul(kind, blas);
      const before = tf.memory().numTensors;
      const probe = tf.zeros([2, 6]) as tf.Tensor2D;
      const fused = causalAttention(probe, 1, 1);
      expect(fused === null, "fused only with the addon").toBe(kind === "wasm");
      tf.dispose([probe, ...(fused === null ? [] : [fused])]);
      // [B, S, H, D, score scale]: one token, odd lengths off the 8-wide lanes, several heads, and
      // scores in the hundreds (the softmax must subtract its row maximum)
      for (const [b, s, h, d, spread] of [
        [2, 1, 2, 4, 1],
        [3, 13, 2, 8, 1],
        [2, 45, 4, 32, 1],
        [1, 9, 3, 5, 10],
      ] as const) {
        const c = h * d;
        const qkv = tf.randomNormal([b * s, 3 * c], 0, spread, "float32", s) as tf.Tensor2D;
        const dy = tf.randomNormal([b * s, c], 0, 1, "float32", s + 1);
        const got = valueAndGrad((x) => active(x, b, h), qkv, dy);
        const want = valueAndGrad((x) => reference(x, b, h), qkv, dy);
        const shape = `B ${b}, S ${s}, H ${h}, D ${d}, scale ${spread}`;
        expect(scaledError(got.value, want.value), `values, ${shape}`).toBeLessThan(1e-5);
        expect(scaledError(got.grad, want.grad), `∂qkv, ${shape}`).toBeLessThan(1e-5);
        tf.dispose([qkv, dy]);
      }
      expect(tf.memory().numTensors, "no tensor leak").toBe(before);
    });

    it(`attention - a Transformer's loss and gradients with training ops equal stock autodiff (${kind})`, () => {
      setWasmMatMul(kind, blas);
      const model = new TransformerLM(
        { vocabSize: 258, contextLength: 16, dModel: 24, nLayers: 2, nHeads: 3 },
        5,
      );
      const { x, y, mask } = syntheticLmBatch(3, 11, 3);
      const run = (ops: "train" | "reference") =>
        tf.variableGrads(
          () => maskedCrossEntropy(model.forward(x, undefined, { ops }), y, mask),
          model.variables(),
        );
      const [fast, stock] = [run("train"), run("reference")];
      expect(
        Math.abs((fast.value.dataSync()[0] as number) - (stock.value.dataSync()[0] as number)),
      ).toBeLessThan(1e-5);
      for (const [name, g] of Object.entries(stock.grads)) {
        expect(scaledError((fast.grads[name] as tf.Tensor).dataSync(), g.dataSync()), name).toBeLessThan(
          1e-5,
        );
      }
      tf.dispose([
        x,
        y,
        mask,
        fast.value,
        stock.value,
        ...Object.values(fast.grads),
        ...Object.values(stock.grads),
      ]);
      model.dispose();
    });
  }

  it.skipIf(blas === null)(
    "attention - on two OpenBLAS threads the (row, head) pairs split and the results are bitwise those of one",
    () => {
      const addon = blas as NonNullable<typeof blas>;
      const threads = addon.info().threads;
      // the learner's batch: 64 rows × 4 heads = 256 pairs, so both threads get work
      const [b, s, h, d] = [64, 45, 4, 32];
      const c = h * d;
      const qkv = Float32Array.from(
        tf.tidy(() => tf.randomNormal([b * s * 3 * c], 0, 2, "float32", 7).dataSync()),
      );
      const dy = Float32Array.from(
        tf.tidy(() => tf.randomNormal([b * s * c], 0, 1, "float32", 8).dataSync()),
      );
      const run = (n: number) => {
        addon.setThreads(n);
        const [y, p, dqkv] = [
          new Float32Array(b * s * c),
          new Float32Array(b * h * s * s),
          new Float32Array(qkv.length),
        ];
        addon.attentionForward(qkv, 0, y, 0, p, 0, b, s, h, d, 1 / Math.sqrt(d));
        addon.attentionBackward(dy, 0, qkv, 0, p, 0, dqkv, 0, b, s, h, d, 1 / Math.sqrt(d));
        return { y, p, dqkv };
      };
      try {
        const [one, two] = [run(1), run(2)];
        expect(bytesEqual(two.y, one.y)).toBe(true);
        expect(bytesEqual(two.p, one.p)).toBe(true);
        expect(bytesEqual(two.dqkv, one.dqkv)).toBe(true);
        expect(one.dqkv.some((v) => v !== 0)).toBe(true);
      } finally {
        addon.setThreads(threads);
      }
    },
  );

  it.skipIf(blas === null)(
    "attention - the addon refuses arrays too small for the shapes it is given",
    () => {
      const addon = blas as NonNullable<typeof blas>;
      const [b, s, h, d] = [2, 3, 2, 4];
      const qkv = new Float32Array(b * s * 3 * h * d);
      const y = new Float32Array(b * s * h * d);
      const p = new Float32Array(b * h * s * s);
      expect(() => addon.attentionForward(qkv, 0, y, 0, p, 0, b, s, h, d, 0.5)).not.toThrow();
      expect(() => addon.attentionForward(qkv, 1, y, 0, p, 0, b, s, h, d, 0.5)).toThrow(/qkv/);
      expect(() => addon.attentionForward(qkv, 0, y, 0, p.subarray(1), 0, b, s, h, d, 0.5)).toThrow(
        RangeError,
      );
      expect(() => addon.attentionForward(qkv, 0, y, 0, p, 0, b, s, h, 0, 0.5)).toThrow(/out of range/);
      expect(() => addon.attentionBackward(y, 0, qkv, 0, p, 0, qkv.subarray(2), 0, b, s, h, d, 0.5)).toThrow(
        /dqkv/,
      );
      expect(() =>
        addon.attentionBackward(
          y,
          0,
          qkv,
          0,
          new Float64Array(p.length) as unknown as Float32Array,
          0,
          qkv,
          0,
          b,
          s,
          h,
          d,
          0.5,
        ),
      ).toThrow(TypeError);
    },
  );
});
