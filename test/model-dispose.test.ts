/**
 * A model's dispose() frees every tensor its construction made. Why a test of its own: each
 * Policy weight swap builds a new model and disposes the old one, so a tensor left behind per
 * model is a leak of one model per step; tf.variable keeps its initial tensor alive unless that
 * is disposed, which once left every model's weights in memory for the whole run.
 */
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import { createModel } from "../services/core/src/model/checkpoint.js";
import { attachLora } from "../services/core/src/model/lora.js";
import { policyModelLoader } from "../services/policy/policy-model.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const CONFIG = { vocabSize: 13, contextLength: 8, dModel: 8, nLayers: 2, nHeads: 2 };

describe("model dispose", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("model dispose - a model built from a seed or from weights leaves no tensor behind", () => {
    const before = tf.memory().numTensors;
    const seeded = createModel(CONFIG, 3);
    const params = seeded.variables().length;
    // Only the parameters are live: no copy of them lingers beside.
    expect(tf.memory().numTensors - before).toBe(params);
    const copy = createModel(CONFIG, seeded.getWeights());
    seeded.dispose();
    copy.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it("model dispose - LoRA adapters leave no tensor behind", () => {
    const model = createModel(CONFIG, 3);
    const before = tf.memory().numTensors;
    const adapters = attachLora(model, { rank: 2, alpha: 4, dropout: 0, targets: [] }, 5);
    expect(tf.memory().numTensors - before).toBe(adapters.variables().length);
    adapters.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it("model dispose - a Policy replica's swap cycle (load, sample, dispose) returns to the tensors it started with", async () => {
    const path = await writeTinyCheckpoint();
    const before = tf.memory().numTensors;
    for (let version = 0; version < 3; version++) {
      const m = policyModelLoader.fromFile(path);
      await m.generate([[1, 2, 3]], {
        maxNewTokens: 3,
        temperature: 1,
        topK: 0,
        topP: 1,
        seed: version,
        stopAtEos: false,
      });
      await m.logprobs([[1, 2, 3]], [[4, 5]]);
      m.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
