/**
 * A LoRA run's checkpoints as the tuned model: their parameters are the frozen base, the adapters
 * ride along as `lora.*` tensors with their settings (metadata `lora`). Why here and not in
 * checkpoint.ts: plain loading (the learner resuming, a weights file's parameters) must keep the
 * base as it is, while sampling, serving and exporting a run's result mean the adapted model.
 */
import { CheckpointError } from "../errors.js";
import type { CausalLM } from "./causal-lm.js";
import { type DecodedCheckpoint, modelFromCheckpoint } from "./checkpoint.js";
import { LORA_SPEC_KEY, LORA_TENSOR_PREFIX, unprefixTensors } from "./checkpoint-names.js";
import { attachLora, type LoraAdapters, type LoraSpec, loraOf } from "./lora.js";
import { mergedWeights } from "./lora-files.js";

/** The metadata a LoRA learner saves beside its adapters (see {@link LORA_SPEC_KEY}). */
export function loraSpecMetadata(spec: LoraSpec): Record<string, string> {
  const { rank, alpha, dropout, targets } = spec;
  return { [LORA_SPEC_KEY]: JSON.stringify({ rank, alpha, dropout, targets }) };
}

/** Whether checkpoint `c` holds LoRA adapters (a LoRA run's). */
export function hasAdapters(c: DecodedCheckpoint): boolean {
  return [...c.state.keys()].some((n) => n.startsWith(LORA_TENSOR_PREFIX));
}

/**
 * The model of checkpoint `c` as trained: a LoRA run's base with its adapters attached (dropout
 * off: they only drop in the learner's training passes), any other checkpoint's model as is.
 * CheckpointError when adapters come without readable settings, WeightsError when they do not
 * fit the model.
 */
export function tunedModel(c: DecodedCheckpoint): CausalLM {
  const model = modelFromCheckpoint(c);
  if (!hasAdapters(c)) return model;
  let spec: LoraSpec;
  try {
    spec = JSON.parse(c.metadata[LORA_SPEC_KEY] ?? "") as LoraSpec;
  } catch (cause) {
    model.dispose();
    throw new CheckpointError(`LoRA adapters without their settings (metadata '${LORA_SPEC_KEY}')`, {
      cause,
    });
  }
  try {
    attachLora(model, spec, unprefixTensors(LORA_TENSOR_PREFIX, c.state));
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

/**
 * Checkpoint `c` with its adapters merged into the parameters (W += alpha/r · B A) and dropped
 * from the state, plus the adapters (for PEFT's files) until `dispose`; null without adapters.
 */
export function mergedCheckpoint(
  c: DecodedCheckpoint,
): { checkpoint: DecodedCheckpoint; adapters: LoraAdapters; dispose: () => void } | null {
  if (!hasAdapters(c)) return null;
  const model = tunedModel(c);
  const adapters = loraOf(model) as LoraAdapters;
  const state = new Map([...c.state].filter(([n]) => !n.startsWith(LORA_TENSOR_PREFIX)));
  return {
    checkpoint: { ...c, weights: mergedWeights(model, adapters), state },
    adapters,
    dispose: () => {
      adapters.dispose();
      model.dispose();
    },
  };
}
