/**
 * The model as the Policy service sees it: a loaded set of weights that can sample and score.
 * Keeping the service behind this small interface lets one replica serve any model family.
 */

/** Sampling options with server defaults resolved. */
export interface SamplingOptions {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  seed: number;
  stopAtEos: boolean;
}

/** One sampled completion. */
export interface GenerationResult {
  tokens: number[];
  /** log π(y_t | x, y_<t) of each sampled token under the model (before temperature). */
  logprobs: number[];
  finishReason: "length" | "eos" | "context";
}

/** A model with weights in memory. */
export interface LoadedModel {
  readonly kind: string;
  readonly backend: string;
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly parameterCount: number;
  readonly configJson: string;
  /** Sample one completion per prompt row (token ids without BOS). */
  generate(prompts: number[][], options: SamplingOptions): GenerationResult[];
  /** Per-token log-probs of each completion given its prompt. */
  logprobs(prompts: number[][], completions: number[][]): number[][];
  dispose(): void;
}

/** Builds LoadedModels from checkpoint files or weight blobs (safetensors bytes). */
export interface ModelLoader {
  fromFile(path: string): LoadedModel;
  fromBlob(blob: Uint8Array): LoadedModel;
}
