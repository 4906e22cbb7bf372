/**
 * Any policy model (Transformer, GRU, LSTM, Seq2Seq: whatever kind the checkpoint declares) as a Policy
 * replica's LoadedModel: loads checkpoints (files or blobs in the safetensors layout, built
 * straight from their weights) and exposes batched sampling and scoring.
 */
import { readFileSync } from "node:fs";
import { CheckpointError } from "../core/src/errors.js";
import { activeBackend } from "../core/src/model/backend.js";
import { type CausalLM, countModelParameters } from "../core/src/model/causal-lm.js";
import { decodeCheckpoint } from "../core/src/model/checkpoint.js";
import { ContinuousSampler, DEFAULT_MAX_ROWS } from "../core/src/model/continuous-sampler.js";
import { tunedModel } from "../core/src/model/lora-checkpoint.js";
import { adaptedModel } from "../core/src/model/lora-shared.js";
import { loadModel } from "../core/src/model/model-source.js";
import { tokenizerOf } from "../core/src/model/tokenizer.js";
import type { Tokenizer } from "../core/src/model/tokenizer-types.js";
import { ScoreBatcher } from "./batcher.js";
import type { LoadedModel, ModelLoader } from "./loaded-model.js";

/**
 * A loaded policy model of any kind: the `CausalLM` a checkpoint declares, behind `LoadedModel`.
 * Its calls are batched: Generate rows through one continuously batched sampler, Logprobs calls
 * through a ScoreBatcher.
 */
export class PolicyModel implements LoadedModel {
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly parameterCount: number;
  readonly configJson: string;
  readonly tokenizer: Tokenizer;
  private readonly sampler: ContinuousSampler;
  private readonly scorer: ScoreBatcher;

  /** `batchRows`: most rows decoded together. `model` is public so adapters can share it as a base. */
  constructor(
    readonly model: CausalLM,
    readonly kind: string,
    batchRows = DEFAULT_MAX_ROWS,
  ) {
    this.vocabSize = model.config.vocabSize;
    this.contextLength = model.config.contextLength;
    this.parameterCount = countModelParameters(model.config);
    this.configJson = JSON.stringify(model.config);
    this.tokenizer = tokenizerOf(model);
    this.sampler = new ContinuousSampler(model, batchRows);
    this.scorer = new ScoreBatcher(model);
  }

  /** The compute backend as reported by GetInfo: `wasm+blas` when the matmuls run on OpenBLAS. */
  get backend(): string {
    return activeBackend();
  }

  generate(...args: Parameters<LoadedModel["generate"]>): ReturnType<LoadedModel["generate"]> {
    return this.sampler.submit(...args);
  }

  logprobs(prompts: number[][], completions: number[][]): Promise<number[][]> {
    return this.scorer.score(prompts, completions);
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** Options of the models a loader builds. */
export interface PolicyModelOptions {
  /** Most rows decoded together (see ContinuousSampler). */
  batchRows?: number;
}

/** A loader of checkpoints of every model kind (`decodeCheckpoint` rejects unknown kinds). */
export function createPolicyModelLoader(opts: PolicyModelOptions = {}): ModelLoader {
  const fromBytes = (bytes: Uint8Array): PolicyModel => {
    const c = decodeCheckpoint(bytes);
    return new PolicyModel(tunedModel(c), c.kind, opts.batchRows);
  };
  return {
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
    fromAdapters(base, blob) {
      if (!(base instanceof PolicyModel))
        throw new CheckpointError("adapter weights need a base loaded by the Policy's own loader");
      return new PolicyModel(adaptedModel(base.model, blob), base.kind, opts.batchRows);
    },
    async fromDir(dir) {
      const model = await loadModel(dir);
      return new PolicyModel(model, model.kind, opts.batchRows);
    },
  };
}

/** The loader with default options. */
export const policyModelLoader: ModelLoader = createPolicyModelLoader();
