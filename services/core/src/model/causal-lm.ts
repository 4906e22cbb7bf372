/**
 * The policy model interface every model family implements (Transformer, GRU, LSTM, Seq2Seq), and the
 * kind-dispatching helpers over their configs. Sampling, scoring, checkpoints, pre-training, the
 * Policy loader and the learner work against `CausalLM` only.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError, WeightsError } from "../errors.js";
import type { HfModelConfig } from "./hf-config.js";
import type { HfOrigin } from "./hf-origin.js";
import { hfParameterShapes, validateHfModelConfig } from "./hf-parameters.js";
import { isRnnKind, type RnnConfig, rnnParameterShapes, validateRnnConfig } from "./rnn-config.js";
import type { RowDecoder } from "./row-decoder.js";
import { type Seq2SeqConfig, seq2seqParameterShapes, validateSeq2SeqConfig } from "./seq2seq-config.js";
import type { Tokenizer } from "./tokenizer-types.js";
import {
  type TransformerConfig,
  transformerParameterShapes,
  validateTransformerConfig,
} from "./transformer-config.js";

/**
 * Model families, as written in a checkpoint's `__metadata__.kind`; `hf-gpt2` and `hf-llama` are
 * models loaded from Hugging Face directories (hf-model-dir.ts).
 */
export type ModelKind = "transformer" | "gru" | "lstm" | "seq2seq" | "hf-gpt2" | "hf-llama";

/**
 * The project's own families: each has a pretrained checkpoint under checkpoints/ and a PyTorch
 * twin in bench/python/ (the speed benchmark compares these).
 */
export const OWN_MODEL_KINDS = [
  "transformer",
  "gru",
  "lstm",
  "seq2seq",
] as const satisfies readonly ModelKind[];

/** Every model kind this code can build from its own checkpoints and configs. */
export const MODEL_KINDS: readonly ModelKind[] = [
  "transformer",
  "gru",
  "lstm",
  "seq2seq",
  "hf-gpt2",
  "hf-llama",
];

/** Any model's config (a TransformerConfig has no `kind` field; the others carry theirs). */
export type ModelConfig = TransformerConfig | RnnConfig | Seq2SeqConfig | HfModelConfig;

/** Plain weights, as stored in checkpoints and shipped between services. */
export type WeightMap = Map<string, { shape: number[]; data: Float32Array }>;

/**
 * What `step` carries between calls: a Transformer's KV cache, an RNN's recurrent state. Opaque
 * to callers, who only pass it back and free it with `disposeState`.
 */
export type DecodingState = object;

/** Extra inputs of a forward pass. */
export interface ForwardOptions {
  /**
   * [B, T] 1 for real tokens, 0 for padding. A Transformer never attends to padded keys; an RNN
   * leaves its state unchanged at padded positions.
   */
  keyMask?: tf.Tensor2D;
  /**
   * Layer implementations: `train` (default; custom gradients), `inference` (fewest kernels, for
   * passes nobody differentiates) or `reference` (stock autodiff; tests compare against it).
   */
  ops?: "train" | "inference" | "reference";
  /**
   * Per row, how many leading tokens (BOS included, left padding included) are the prompt. A
   * model that conditions on a source (Seq2Seq) encodes those and decodes the rest: the logits at
   * position sourceLengths[r] − 1 are the first completion token's. Callers that know where the
   * prompt ends (scoring, the learner, pre-training) pass it; causal LMs ignore it, since their
   * logits at t never depend on where the prompt ends. Default: the whole row is the prompt.
   */
  sourceLengths?: readonly number[];
}

/** An autoregressive language model over token ids whose parameters are `tf.Variable`s. */
export interface CausalLM {
  /** Model family (the checkpoint's `kind`). */
  readonly kind: ModelKind;
  /** Validated hyperparameters; every kind has `vocabSize` and `contextLength`. */
  readonly config: ModelConfig;
  /**
   * The tokenizer the model was trained with, when it brings its own (a Hugging Face model
   * directory); absent means the byte tokenizer (see `tokenizerOf`).
   */
  readonly tokenizer?: Tokenizer;
  /** The Hugging Face directory the model was loaded from (absent for the project's own kinds). */
  readonly origin?: HfOrigin;
  /**
   * Logits [B, T, V] for int32 tokens [B, T], differentiable. Row t's logits depend only on
   * tokens ≤ t, so right-padded training batches are exact. `positions` [B, T] are per-row
   * position ids (Transformer only; RNNs ignore them).
   */
  forward(tokens: tf.Tensor2D, positions?: tf.Tensor2D, options?: ForwardOptions): tf.Tensor3D;
  /**
   * Incremental decoding: `tokens`/`positions` [B, S] continue the prefix summarised by `past`
   * (null at the start); `keyMask` [B, P + S] covers the prefix and the new tokens. A masked
   * position does not affect any later logits (left-padded prompts give each row the results
   * it would have alone). Returns logits [B, S, V] and the new state; the caller owns both and
   * frees the old state (`disposeState`). The first call (past null) carries the whole prompt:
   * a Seq2Seq model encodes it as the source and decodes every later call's tokens.
   */
  step(
    tokens: tf.Tensor2D,
    positions: tf.Tensor2D,
    keyMask: tf.Tensor2D,
    past: DecodingState | null,
  ): { logits: tf.Tensor3D; cache: DecodingState };
  /**
   * A decoder of up to `capacity` rows in slots, for continuous batching (row-decoder.ts): the
   * sampler's incremental path, whose rows' results do not depend on the other rows.
   */
  decoder(capacity: number): RowDecoder;
  /** The trainable variables, in parameter order. */
  variables(): tf.Variable[];
  /** A copy of every parameter. */
  getWeights(): WeightMap;
  /** Replaces every parameter (WeightsError, nothing changed, when names or shapes differ). */
  setWeights(weights: WeightMap): void;
  /** Frees the parameters. */
  dispose(): void;
}

/**
 * Checks a forward pass's inputs: int32 tokens [B, T] with T ≥ 1 and, when given, a key mask of
 * the same [B, T]. Throws ValidationError naming the bad input.
 */
export function checkForwardInputs(tokens: tf.Tensor2D, keyMask: tf.Tensor2D | null | undefined): void {
  const [b, t] = tokens.shape;
  if (tokens.rank !== 2 || t < 1)
    throw new ValidationError("tokens", `must be [B, T], got [${tokens.shape}]`);
  if (keyMask != null && (keyMask.shape[0] !== b || keyMask.shape[1] !== t)) {
    throw new ValidationError("keyMask", `must be [${b}, ${t}], got [${keyMask.shape}]`);
  }
}

/**
 * Checks a decoding step's key mask: [B, P + S] for S new tokens [B, S] (the prefix's columns
 * first). Throws ValidationError naming `keyMask`.
 */
export function checkStepMask(tokens: tf.Tensor2D, keyMask: tf.Tensor2D): void {
  const [b, s] = tokens.shape;
  if (keyMask.shape[0] !== b || keyMask.shape[1] < s) {
    throw new ValidationError("keyMask", `must be [${b}, ≥${s}], got [${keyMask.shape}]`);
  }
}

/** Frees every tensor reachable from a decoding state (a KV cache or a recurrent state). */
export function disposeState(state: DecodingState | null): void {
  if (state === null) return;
  const walk = (x: unknown): void => {
    if (x === null || typeof x !== "object") return;
    if (typeof (x as tf.Tensor).dispose === "function" && "dataId" in x) (x as tf.Tensor).dispose();
    else if (Array.isArray(x)) x.forEach(walk);
    else Object.values(x).forEach(walk);
  };
  walk(state);
}

/** The kind a config describes. */
export function modelKindOf(config: ModelConfig): ModelKind {
  return "kind" in config ? config.kind : "transformer";
}

/** Checks an untrusted config for `kind`; throws ValidationError naming the bad field. */
export function validateModelConfig(kind: string, value: unknown): ModelConfig {
  if (kind === "transformer") return validateTransformerConfig(value);
  if (kind === "hf-gpt2" || kind === "hf-llama") return validateHfModelConfig(kind, value);
  if (isRnnKind(kind) || kind === "seq2seq") {
    const withKind = { ...(value as object), kind };
    const c = kind === "seq2seq" ? validateSeq2SeqConfig(withKind) : validateRnnConfig(withKind);
    if (typeof value === "object" && value !== null && "kind" in value && value.kind !== kind) {
      throw new ValidationError(
        "config.kind",
        `is ${JSON.stringify(value.kind)} but the model kind is ${kind}`,
      );
    }
    return c;
  }
  throw new ValidationError("kind", `unsupported model kind ${JSON.stringify(kind)}`);
}

/** Parameter names and shapes of any config. */
export function modelParameterShapes(config: ModelConfig): Map<string, number[]> {
  if (!("kind" in config)) return transformerParameterShapes(config);
  if (config.kind === "hf-gpt2" || config.kind === "hf-llama") return hfParameterShapes(config);
  return config.kind === "seq2seq" ? seq2seqParameterShapes(config) : rnnParameterShapes(config);
}

/** Total number of scalar parameters of any config. */
export function countModelParameters(config: ModelConfig): number {
  let n = 0;
  for (const shape of modelParameterShapes(config).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/** A copy of every parameter as plain Float32Arrays (for checkpoints and weight publishing). */
export function readParams(params: ReadonlyMap<string, tf.Variable>): WeightMap {
  const out: WeightMap = new Map();
  for (const [name, variable] of params) {
    out.set(name, {
      shape: [...variable.shape],
      data: Float32Array.from(variable.dataSync() as Float32Array),
    });
  }
  return out;
}

/**
 * Checks that `weights` names exactly the parameters of `shapes` with matching shapes and value
 * counts; throws WeightsError naming the first mismatch. Shared by `writeParams` and models built
 * straight from weights, so both refuse the same maps with the same words.
 */
export function checkWeights(shapes: ReadonlyMap<string, readonly number[]>, weights: WeightMap): void {
  for (const name of weights.keys()) {
    if (!shapes.has(name)) throw new WeightsError(`unexpected parameter '${name}'`);
  }
  for (const [name, shape] of shapes) {
    const w = weights.get(name);
    if (w === undefined) throw new WeightsError(`missing parameter '${name}'`);
    if (w.shape.length !== shape.length || w.shape.some((dim, i) => dim !== shape[i])) {
      throw new WeightsError(`parameter '${name}' has shape [${w.shape}], expected [${shape}]`);
    }
    const size = shape.reduce((a, b) => a * b, 1);
    if (w.data.length !== size) {
      throw new WeightsError(`parameter '${name}' has ${w.data.length} values, expected ${size}`);
    }
  }
}

/**
 * Replaces every parameter. The map must name exactly these parameters with matching shapes;
 * otherwise WeightsError is thrown and no parameter is changed (all checks run before any write).
 */
export function writeParams(params: ReadonlyMap<string, tf.Variable>, weights: WeightMap): void {
  checkWeights(new Map([...params].map(([name, v]) => [name, v.shape])), weights);
  for (const [name, variable] of params) {
    const w = weights.get(name) as { shape: number[]; data: Float32Array };
    tf.tidy(() => variable.assign(tf.tensor(w.data, w.shape, "float32")));
  }
}
