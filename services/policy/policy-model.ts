/**
 * Any policy model (Transformer, GRU, LSTM, Seq2Seq: whatever kind the checkpoint declares) as a Policy
 * replica's LoadedModel: loads checkpoints (files or blobs in the safetensors layout) and exposes
 * sampling and scoring.
 */
import { readFileSync } from "node:fs";
import { CheckpointError } from "../core/src/errors.js";
import { activeBackend } from "../core/src/model/backend.js";
import { type CausalLM, countModelParameters } from "../core/src/model/causal-lm.js";
import { decodeCheckpoint, modelFromCheckpoint } from "../core/src/model/checkpoint.js";
import { generate, sequenceLogprobs } from "../core/src/model/sampler.js";
import type { LoadedModel, ModelLoader } from "./loaded-model.js";

/** A loaded policy model of any kind: the `CausalLM` a checkpoint declares, behind `LoadedModel`. */
export class PolicyModel implements LoadedModel {
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly parameterCount: number;
  readonly configJson: string;

  constructor(
    private readonly model: CausalLM,
    readonly kind: string,
  ) {
    this.vocabSize = model.config.vocabSize;
    this.contextLength = model.config.contextLength;
    this.parameterCount = countModelParameters(model.config);
    this.configJson = JSON.stringify(model.config);
  }

  /** The compute backend as reported by GetInfo: `wasm+blas` when the matmuls run on OpenBLAS. */
  get backend(): string {
    return activeBackend();
  }

  generate(...args: Parameters<LoadedModel["generate"]>): ReturnType<LoadedModel["generate"]> {
    return generate(this.model, ...args);
  }

  logprobs(prompts: number[][], completions: number[][]): number[][] {
    return sequenceLogprobs(this.model, prompts, completions);
  }

  dispose(): void {
    this.model.dispose();
  }
}

function fromBytes(bytes: Uint8Array): PolicyModel {
  const c = decodeCheckpoint(bytes);
  return new PolicyModel(modelFromCheckpoint(c), c.kind);
}

/** Loads checkpoints of every model kind (`decodeCheckpoint` rejects unknown kinds). */
export const policyModelLoader: ModelLoader = {
  fromFile(path) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (cause) {
      throw new CheckpointError(`cannot read checkpoint ${path}: ${(cause as Error).message}`, { cause });
    }
    return fromBytes(bytes);
  },
  fromBlob: fromBytes,
};
