import * as tf from "@tensorflow/tfjs";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { WeightsError } from "../services/core/src/errors.js";
import { sha256Hex } from "../services/core/src/hash.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { checkpointFromModel, createModel, encodeCheckpoint } from "../services/core/src/model/checkpoint.js";
import { attachLora, type LoraSpec } from "../services/core/src/model/lora.js";
import { encodeAdapterBlob } from "../services/core/src/model/lora-files.js";
import { AdaptedLM } from "../services/core/src/model/lora-shared.js";
import type { TransformerConfig } from "../services/core/src/model/transformer-config.js";
import { publishWeights } from "../services/core/src/weights/weights-channel.js";
import { createPolicyModelLoader, PolicyModel } from "../services/policy/policy-model.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";

const CONFIG: TransformerConfig = { vocabSize: 258, contextLength: 16, dModel: 8, nLayers: 2, nHeads: 2 };
const SPEC: LoraSpec = { rank: 2, alpha: 4, dropout: 0, targets: [] };
const PROMPTS = [[1, 5, 2], [4]];
const COMPLETIONS = [
  [9, 3, 7],
  [4, 7, 0, 12],
];

/** A "learner": the base with adapters whose B is non-zero (as after some updates). */
function tunedLearner(seed: number) {
  const model = createModel(CONFIG, 3);
  const lora = attachLora(model, SPEC, 5);
  for (const v of lora.variables()) v.assign(tf.randomNormal(v.shape, 0, 0.5, "float32", seed));
  const baseBlob = encodeCheckpoint(checkpointFromModel(model));
  return { model, lora, baseBlob, baseSha: sha256Hex(baseBlob) };
}

const GREEDY = { maxNewTokens: 6, temperature: 0, topK: 0, topP: 1, seed: 1, stopAtEos: false };

const cleanup: (() => Promise<void> | void)[] = [];

describe("lora replica", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });
  afterEach(async () => {
    for (const f of cleanup.splice(0)) await f();
  });

  it("lora replica - adapter versions are served over the reference's base: log-probs equal the learner's adapted model", async () => {
    const learner = tunedLearner(11);
    const bus = new MemoryBus();
    const loader = createPolicyModelLoader();
    const replica = new PolicyReplica(loader.fromBlob(learner.baseBlob), loader);
    cleanup.push(
      () => replica.close(),
      () => bus.close(),
      () => learner.model.dispose(),
    );
    const first = await publishWeights(bus, {
      blob: learner.baseBlob,
      runId: "r",
      step: 0,
      modelKind: "transformer",
    });
    await replica.apply(bus, first);
    const reference = { objectName: first.objectName, sha256: first.sha256, version: 1 };
    const adapterBlob = encodeAdapterBlob(learner.lora, learner.baseSha);
    const v2 = await publishWeights(bus, {
      blob: adapterBlob,
      runId: "r",
      step: 1,
      modelKind: "transformer",
      reference,
    });
    await replica.apply(bus, v2);
    expect(replica.serving.version).toBe(2);
    expect(replica.referenceModel.version).toBe(1);
    // One copy of the base: the served model's layers are the reference's.
    const served = (replica.serving.model as PolicyModel).model;
    expect(served).toBeInstanceOf(AdaptedLM);
    expect((served as AdaptedLM).base).toBe((replica.referenceModel.model as PolicyModel).model);
    // The learner's adapted model and its frozen base, scored the same way the replica scores.
    const own = new PolicyModel(learner.model, "transformer");
    const adaptedLp = await own.logprobs(PROMPTS, COMPLETIONS);
    const plain = createModel(CONFIG, 3);
    cleanup.push(() => plain.dispose());
    const baseLp = await new PolicyModel(plain, "transformer").logprobs(PROMPTS, COMPLETIONS);
    expect(await replica.serving.model.logprobs(PROMPTS, COMPLETIONS)).toEqual(adaptedLp);
    expect(await replica.referenceModel.model.logprobs(PROMPTS, COMPLETIONS)).toEqual(baseLp);
    expect(adaptedLp).not.toEqual(baseLp);
    // Sampling goes through the adapters too: a greedy completion is the adapted model's argmax.
    const [greedy] = await replica.serving.model.generate([[1, 5]], GREEDY);
    const [ownGreedy] = await own.generate([[1, 5]], GREEDY);
    expect(greedy?.tokens).toEqual(ownGreedy?.tokens);
    // A later adapter version replaces the first; the base (reference) stays alive and exact.
    const next = tunedLearner(12);
    cleanup.push(() => next.model.dispose());
    expect(next.baseSha).toBe(learner.baseSha);
    const v3 = await publishWeights(bus, {
      blob: encodeAdapterBlob(next.lora, next.baseSha),
      runId: "r",
      step: 2,
      modelKind: "transformer",
      reference,
    });
    await replica.apply(bus, v3);
    expect(await replica.serving.model.logprobs(PROMPTS, COMPLETIONS)).toEqual(
      await new PolicyModel(next.model, "transformer").logprobs(PROMPTS, COMPLETIONS),
    );
    expect(await replica.referenceModel.model.logprobs(PROMPTS, COMPLETIONS)).toEqual(baseLp);
  });

  it("lora replica - adapters bound to another base are refused and the served version kept", async () => {
    const learner = tunedLearner(11);
    const bus = new MemoryBus();
    const loader = createPolicyModelLoader();
    const replica = new PolicyReplica(loader.fromBlob(learner.baseBlob), loader);
    cleanup.push(
      () => replica.close(),
      () => bus.close(),
      () => learner.model.dispose(),
    );
    const first = await publishWeights(bus, {
      blob: learner.baseBlob,
      runId: "r",
      step: 0,
      modelKind: "transformer",
    });
    await replica.apply(bus, first);
    const reference = { objectName: first.objectName, sha256: first.sha256, version: 1 };
    const foreign = encodeAdapterBlob(learner.lora, "ab".repeat(32));
    const v2 = await publishWeights(bus, {
      blob: foreign,
      runId: "r",
      step: 1,
      modelKind: "transformer",
      reference,
    });
    await expect(replica.apply(bus, v2)).rejects.toThrow(WeightsError);
    await expect(replica.apply(bus, v2)).rejects.toThrow(/adapters apply to base abababababab/);
    expect(replica.serving.version).toBe(1);
    // An adapter blob cannot be its own run's reference either (its base is not itself).
    const alone = await publishWeights(bus, {
      blob: encodeAdapterBlob(learner.lora, learner.baseSha),
      runId: "other",
      step: 0,
      modelKind: "transformer",
    });
    await expect(replica.apply(bus, alone)).rejects.toThrow(/adapters apply to base/);
    expect(replica.serving.version).toBe(1);
  });
});
