/**
 * The parameter store every model family shares (Transformer, GRU/LSTM, Seq2Seq): named
 * `tf.Variable`s created deterministically from a seed, and the `CausalLM` methods that only
 * touch parameters. One place, so checkpoints, weight publishing and optimisers see the same
 * behaviour from every kind.
 */
import * as tf from "@tensorflow/tfjs";
import { checkWeights, readParams, type WeightMap, writeParams } from "./causal-lm.js";
import type { LayerOps } from "./layers.js";
import { hashString, Rng } from "./rng.js";

/** Fills a parameter's fresh (zeroed) data; `rng` is this parameter's own stream. */
export type ParamInit = (name: string, shape: readonly number[], data: Float32Array, rng: Rng) => void;

/**
 * Where a model's parameters come from: a seed (fresh weights, drawn by the family's init), or
 * the weights themselves (a checkpoint, published weights). Building straight from weights skips
 * the random initialisation a load would overwrite at once (~40 ms for the default Transformer,
 * paid on every weight swap of a Policy replica).
 */
export type ParamSource = number | WeightMap;

/**
 * Extra terms on a model's linear layers (LoRA's low-rank adapters, lora.ts): given the layer's
 * weight name, its input rows x and its output y = layer(x), the adapted output. An interface
 * here, so every family's blocks call one hook and the adapters stay out of the layer code.
 */
export interface LinearAdapters {
  apply(weight: string, x: tf.Tensor2D, y: tf.Tensor2D, ops: LayerOps): tf.Tensor2D;
}

let modelCounter = 0;

/** Base class of the model families: owns the parameters, in parameter order. */
export abstract class ParamModel {
  /** Parameters by name, in the order of the shapes they were built from. */
  readonly params: ReadonlyMap<string, tf.Variable>;

  /**
   * Creates every parameter of `shapes`. From a seed: with `init`, each parameter drawing from its
   * own RNG stream (seed, hash(name)), so the same seed gives the same weights on every backend
   * and adding a parameter does not change the others. From weights: their values, after
   * `checkWeights` (WeightsError, nothing allocated, when names or shapes differ). Variables are
   * named `<prefix><n>/<name>` (unique per process, as tfjs requires).
   */
  protected constructor(
    prefix: string,
    shapes: ReadonlyMap<string, number[]>,
    source: ParamSource,
    init: ParamInit,
  ) {
    if (typeof source !== "number") checkWeights(shapes, source);
    const unique = `${prefix}${modelCounter++}`;
    const params = new Map<string, tf.Variable>();
    for (const [name, shape] of shapes) {
      let data: Float32Array;
      if (typeof source === "number") {
        data = new Float32Array(shape.reduce((a, b) => a * b, 1));
        init(name, shape, data, new Rng(source, hashString(name)));
      } else data = (source.get(name) as { data: Float32Array }).data;
      // tf.variable shares the initial tensor's data (a reference, not a copy) and leaves that
      // tensor alive: undisposed, it kept every model's weights in memory after the model's own
      // dispose() — one whole model per weight swap on a Policy replica (docs/platform-notes.md#memory-growth).
      const initial = tf.tensor(data, shape, "float32");
      params.set(name, tf.variable(initial, true, `${unique}/${name}`));
      initial.dispose();
    }
    this.params = params;
  }

  /**
   * Adapters on the linear layers (LoRA), or null (the plain model). Set by `attachLora`; the
   * parameters above stay the frozen base either way.
   */
  adapters: LinearAdapters | null = null;

  /** Layer output `y = layer(x)` of weight `weight`, plus the adapters' term when attached. */
  adapt(weight: string, x: tf.Tensor2D, y: tf.Tensor2D, ops: LayerOps): tf.Tensor2D {
    return this.adapters === null ? y : this.adapters.apply(weight, x, y, ops);
  }

  /** The trainable variables, in parameter order (for `tf.variableGrads`, optimisers). */
  variables(): tf.Variable[] {
    return [...this.params.values()];
  }

  /** A parameter by name, typed for the layer code. */
  protected p<T extends tf.Tensor>(name: string): T {
    return this.params.get(name) as unknown as T;
  }

  /** A copy of every parameter (see `readParams`). */
  getWeights(): WeightMap {
    return readParams(this.params);
  }

  /** Replaces every parameter, all or nothing (see `writeParams`). */
  setWeights(weights: WeightMap): void {
    writeParams(this.params, weights);
  }

  /** Frees the parameters. */
  dispose(): void {
    for (const v of this.params.values()) v.dispose();
  }
}
