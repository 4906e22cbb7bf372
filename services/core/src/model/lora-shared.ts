/**
 * A LoRA-tuned model that shares its base: `AdaptedLM` runs a base model's layers with one
 * adapter set switched in, so a Policy replica serving adapter-only weight versions holds the
 * base once (it is also the run's KL reference) and a few hundred KB of adapters per version.
 *
 * Why swap the base's adapters per call instead of attaching them for good: several versions
 * (the one being served, older ones still finishing their calls) and the plain reference share
 * the one base. Every CausalLM and RowDecoder call is synchronous (each tf op runs when it is
 * issued), so setting `base.adapters` for the duration of a call cannot leak into another.
 */
import type * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import type { CausalLM, DecodingState, ForwardOptions, WeightMap } from "./causal-lm.js";
import { LoraAdapters, targetLayers } from "./lora.js";
import type { AdapterBlob } from "./lora-files.js";
import { mergedWeights } from "./lora-files.js";
import { ParamModel } from "./param-model.js";
import type { RowDecoder } from "./row-decoder.js";

/** `base` computing with `adapters` on: a CausalLM whose dispose frees the adapters only. */
export class AdaptedLM implements CausalLM {
  constructor(
    readonly base: CausalLM & ParamModel,
    readonly adapters: LoraAdapters,
  ) {}

  get kind(): CausalLM["kind"] {
    return this.base.kind;
  }

  get config(): CausalLM["config"] {
    return this.base.config;
  }

  get tokenizer(): CausalLM["tokenizer"] {
    return this.base.tokenizer;
  }

  get origin(): CausalLM["origin"] {
    return this.base.origin;
  }

  /** `fn` with this model's adapters on the base, the base's own adapters (if any) back after. */
  private run<T>(fn: () => T): T {
    const prev = this.base.adapters;
    this.base.adapters = this.adapters;
    try {
      return fn();
    } finally {
      this.base.adapters = prev;
    }
  }

  forward(tokens: tf.Tensor2D, positions?: tf.Tensor2D, options?: ForwardOptions): tf.Tensor3D {
    return this.run(() => this.base.forward(tokens, positions, options));
  }

  step(
    tokens: tf.Tensor2D,
    positions: tf.Tensor2D,
    keyMask: tf.Tensor2D,
    past: DecodingState | null,
  ): { logits: tf.Tensor3D; cache: DecodingState } {
    return this.run(() => this.base.step(tokens, positions, keyMask, past));
  }

  decoder(capacity: number): RowDecoder {
    const inner = this.run(() => this.base.decoder(capacity));
    const run = <T>(fn: () => T) => this.run(fn);
    return {
      get capacity() {
        return inner.capacity;
      },
      resize: (c, keep) => run(() => inner.resize(c, keep)),
      prefillKey: (length) => inner.prefillKey(length),
      prefill: (prompts, slots) => run(() => inner.prefill(prompts, slots)),
      step: (tokens, positions) => run(() => inner.step(tokens, positions)),
      dispose: () => inner.dispose(),
    };
  }

  /** The adapter variables (the base is frozen and owned elsewhere). */
  variables(): tf.Variable[] {
    return this.adapters.variables();
  }

  /** The merged weights W + alpha/r · B A under the base's names: this model as a plain one. */
  getWeights(): WeightMap {
    return mergedWeights(this.base, this.adapters);
  }

  /** Not supported: the base is shared; a new version is a new AdaptedLM. */
  setWeights(): void {
    throw new ValidationError("weights", "an adapted model's shared base cannot be replaced");
  }

  /** Frees the adapters; the base stays with its owner. */
  dispose(): void {
    this.adapters.dispose();
  }
}

/**
 * The model of an adapter blob on `base`: its adapters (names and shapes checked against the
 * layers the blob's targets select; WeightsError when they differ) over the shared base. The
 * caller checks the blob's base SHA-256 first (`checkAdapterBase`).
 */
export function adaptedModel(base: CausalLM, blob: AdapterBlob): AdaptedLM {
  if (!(base instanceof ParamModel) || base.adapters !== null)
    throw new ValidationError("weights", `adapters need a plain ${base.kind} base model`);
  const adapters = new LoraAdapters(blob.spec, targetLayers(base, blob.spec), blob.weights);
  return new AdaptedLM(base as CausalLM & ParamModel, adapters);
}
