/**
 * The model as the Policy service sees it: a loaded set of weights that can sample and score.
 * Keeping the service behind this small interface lets one replica serve any model family.
 */

import type { AdapterBlob } from "../core/src/model/lora-files.js";
import type { GenerationResult, SamplingParams } from "../core/src/model/sampling.js";
import type { Tokenizer } from "../core/src/model/tokenizer-types.js";

export type { GenerationResult, SamplingParams };

/** A model with weights in memory. */
export interface LoadedModel {
  readonly kind: string;
  readonly backend: string;
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly parameterCount: number;
  readonly configJson: string;
  /** The model's own tokenizer: prompts are encoded and completions spelled with it. */
  readonly tokenizer: Tokenizer;
  /**
   * Sample one completion per prompt row (token ids without BOS); `onToken` sees each token as it
   * is sampled, and `signal` stops the work early. Concurrent calls share forward passes.
   */
  generate(
    prompts: number[][],
    options: SamplingParams,
    onToken?: (row: number, token: number, logprob: number) => void,
    signal?: AbortSignal,
  ): Promise<GenerationResult[]>;
  /** Per-token log-probs of each completion given its prompt. */
  logprobs(prompts: number[][], completions: number[][]): Promise<number[][]>;
  /** Frees the weights; the replica calls it once no call uses the model any more. */
  dispose(): void;
}

/** Builds LoadedModels from checkpoint files or weight blobs (safetensors bytes). */
export interface ModelLoader {
  fromFile(path: string): LoadedModel;
  /** Loads a Hugging Face model directory (`--model <dir>`), tokenizer included, when supported. */
  fromDir?(dir: string): Promise<LoadedModel>;
  fromBlob(blob: Uint8Array): LoadedModel;
  /**
   * The model of LoRA adapters over `base` (a model this loader built), sharing base's weights:
   * a LoRA run publishes adapter-only versions, and the base is also the run's reference.
   * Disposing the result frees the adapters only.
   */
  fromAdapters?(base: LoadedModel, blob: AdapterBlob): LoadedModel;
}
