import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { Adam } from "../services/core/src/learn/adam.js";
import { learningRate } from "../services/core/src/learn/schedule.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { loadCorpusSplit } from "../services/core/src/model/corpus.js";
import {
  buildStream,
  type PretrainLog,
  pretrain,
  sampleWindows,
} from "../services/core/src/model/pretrain.js";
import { Rng } from "../services/core/src/model/rng.js";
import { BOS, EOS } from "../services/core/src/model/tokenizer.js";

const TINY = { vocabSize: 258, contextLength: 16, dModel: 16, nLayers: 1, nHeads: 2 };

describe("pretrain", () => {
  let sentences: { train: string[]; heldOut: string[] };
  beforeAll(async () => {
    await initBackend("wasm");
    const split = loadCorpusSplit();
    sentences = { train: split.train.slice(0, 300), heldOut: split.heldOut.slice(0, 50) };
  });

  it("pretrain - a few steps on a tiny config lower the loss without leaking tensors", async () => {
    const logs: PretrainLog[] = [];
    const counts: number[] = [];
    const model = await pretrain({
      config: TINY,
      steps: 40,
      batchSize: 8,
      lr: 1e-2,
      seed: 2,
      warmupSteps: 5,
      evalEvery: 20,
      evalBatches: 2,
      sentences,
      onLog: (e) => {
        logs.push(e);
        counts.push(tf.memory().numTensors);
      },
    });
    const mean = (xs: PretrainLog[]) => xs.reduce((s, e) => s + e.loss, 0) / xs.length;
    expect(mean(logs.slice(-5))).toBeLessThan(mean(logs.slice(0, 5)) - 1);
    const evals = logs.filter((e) => e.heldOutBpb !== undefined);
    expect(evals.map((e) => e.step)).toEqual([19, 39]);
    expect(evals[1]?.heldOutBpb).toBeCloseTo((evals[1]?.heldOutLoss as number) / Math.LN2, 10);
    expect(evals[1]?.heldOutLoss).toBeLessThan(evals[0]?.heldOutLoss as number);
    // Flat from the first step on: the optimiser state exists before step 0.
    expect(new Set(counts).size).toBe(1);
    model.dispose();
    expect(tf.memory().numTensors).toBeLessThan(counts[0] as number);
  });

  it("pretrain - windows come from a BOS/EOS stream and never score BOS targets", () => {
    const stream = buildStream(["ab", "c"]);
    expect([...stream.tokens]).toEqual([BOS, 97, 98, EOS, BOS, 99, EOS]);
    expect([...stream.starts]).toEqual([0, 4]);
    const big = buildStream(sentences.train.slice(0, 50));
    const w = sampleWindows(big, 64, 16, new Rng(1), 1);
    for (let r = 0; r < 64; r++) expect(w.x[r * 16]).toBe(BOS);
    for (let i = 0; i < w.y.length; i++) expect(w.mask[i]).toBe(w.y[i] === BOS ? 0 : 1);
    for (let r = 0; r < 64; r++)
      for (let i = 0; i < 15; i++) expect(w.x[r * 16 + i + 1]).toBe(w.y[r * 16 + i]);
  });

  it("pretrain - AdamW with matrix-only decay matches a hand-computed update", () => {
    const w = tf.variable(tf.tensor2d([[1, -2]]), true, "adamw-test-w");
    const b = tf.variable(tf.tensor1d([3]), true, "adamw-test-b");
    const opt = new Adam({ learningRate: 0.01, beta2: 0.99, weightDecay: 0.1, decayMatricesOnly: true });
    const gw = tf.tensor2d([[0.5, -4]]);
    const gb = tf.tensor1d([2]);
    opt.applyGradients([w, b], [gw, gb]);
    // step 1: m̂ = g, v̂ = g², Δ = sign(g); the matrix also decays by λθ, the bias does not
    const expected = [1 - 0.01 * (1 + 0.1 * 1), -2 - 0.01 * (-1 + 0.1 * -2)];
    const got = w.dataSync();
    expected.forEach((e, i) => {
      expect(got[i]).toBeCloseTo(e, 6);
    });
    expect(b.dataSync()[0]).toBeCloseTo(3 - 0.01, 6);
    tf.dispose([w, b, gw, gb]);
    opt.dispose();
  });

  it("pretrain - the warm-up/cosine schedule", () => {
    const o = { lr: 1, warmupSteps: 10, totalSteps: 110, minRatio: 0.1 };
    expect(learningRate(0, o)).toBeCloseTo(0.1);
    expect(learningRate(9, o)).toBeCloseTo(1);
    expect(learningRate(60, o)).toBeCloseTo(0.55);
    expect(learningRate(110, o)).toBeCloseTo(0.1);
    expect(learningRate(500, o)).toBeCloseTo(0.1);
  });
});
