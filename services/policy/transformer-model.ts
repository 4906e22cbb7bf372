/**
 * The Transformer policy as a Policy replica's LoadedModel: loads checkpoints (files or blobs in
 * the safetensors layout) and exposes sampling and scoring.
 */
import { readFileSync } from "node:fs";
import * as tf from "@tensorflow/tfjs";
import { CheckpointError } from "../core/src/errors.js";
import { decodeCheckpoint, modelFromCheckpoint } from "../core/src/model/checkpoint.js";
import { countParameters } from "../core/src/model/config.js";
import { generate, sequenceLogprobs } from "../core/src/model/sampler.js";
import type { Transformer } from "../core/src/model/transformer.js";
import type { LoadedModel, ModelLoader } from "./loaded-model.js";

/** A loaded Transformer. */
export class TransformerModel implements LoadedModel {
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly parameterCount: number;
  readonly configJson: string;

  constructor(
    private readonly model: Transformer,
    readonly kind: string,
  ) {
    this.vocabSize = model.config.vocabSize;
    this.contextLength = model.config.contextLength;
    this.parameterCount = countParameters(model.config);
    this.configJson = JSON.stringify(model.config);
  }

  get backend(): string {
    return tf.getBackend();
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

function fromBytes(bytes: Uint8Array): TransformerModel {
  const c = decodeCheckpoint(bytes);
  if (c.kind !== "transformer") throw new CheckpointError(`unsupported model kind "${c.kind}"`);
  return new TransformerModel(modelFromCheckpoint(c), c.kind);
}

/** Loads Transformer checkpoints. */
export const transformerLoader: ModelLoader = {
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
