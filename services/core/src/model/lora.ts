/**
 * LoRA (Hu et al. 2021) as PEFT computes it: each target linear layer W of a model gets a
 * low-rank term, y = layer(x) + (dropout(x) Aᵀ) Bᵀ · alpha / r, with A [r, in] and B [out, r]
 * (nn.Linear orientation whatever W's own layout) trained and W frozen. B starts at zero, so a
 * fresh adapter set leaves the model exactly as it was.
 *
 * Why a hook on the layers (ParamModel.adapt), not merged weights: the frozen base with the
 * adapters switched off is the run's KL reference, so one copy of the base serves both the policy
 * and its reference, and dropout acts on the adapters' input as in PEFT (training passes only).
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError, WeightsError } from "../errors.js";
import type { CausalLM, WeightMap } from "./causal-lm.js";
import { checkWeights, readParams, writeParams } from "./causal-lm.js";
import type { LayerOps } from "./layers.js";
import { type LinearAdapters, ParamModel } from "./param-model.js";
import { hashString, Rng } from "./rng.js";

/** A run's LoRA settings (`run.loraRank`, `run.loraAlpha`, `run.loraDropout`, `run.loraTargets`). */
export interface LoraSpec {
  rank: number;
  alpha: number;
  dropout: number;
  /** Layer-name suffixes, as PEFT's target_modules; empty = every block linear. */
  targets: readonly string[];
}

/** The LoRA settings of a run, or null when rank is 0 (full fine-tuning, unchanged). */
export function loraSpecOf(run: {
  loraRank: number;
  loraAlpha: number;
  loraDropout: number;
  loraTargets: readonly string[];
}): LoraSpec | null {
  if (run.loraRank === 0) return null;
  return { rank: run.loraRank, alpha: run.loraAlpha, dropout: run.loraDropout, targets: run.loraTargets };
}

/** One linear layer an adapter can sit on. */
export interface LinearLayer {
  /** The model's parameter name of its weight, e.g. `h.0.attn.c_attn.weight`. */
  weight: string;
  /** The Hugging Face module path, e.g. `transformer.h.0.attn.c_attn` (PEFT's key names). */
  module: string;
  inDim: number;
  outDim: number;
  /** How W is stored: `in-out` (GPT-2 Conv1D, the project's Transformer) or `out-in` (nn.Linear). */
  layout: "in-out" | "out-in";
}

const GPT2_LINEAR = /^h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;
const LLAMA_LINEAR = /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/;

/**
 * Every linear layer of a model's blocks that LoRA can adapt, in parameter order: the
 * Transformer's and GPT-2's qkv, attention output and MLP layers, Llama's q/k/v/o and
 * gate/up/down projections. Other families have no such layers: ValidationError naming
 * `run.loraRank`.
 */
export function linearLayers(model: CausalLM): LinearLayer[] {
  const gpt = model.kind === "transformer" || model.kind === "hf-gpt2";
  if (!gpt && model.kind !== "hf-llama")
    throw new ValidationError(
      "run.loraRank",
      `LoRA needs a transformer, hf-gpt2 or hf-llama model, not ${model.kind}`,
    );
  const out: LinearLayer[] = [];
  for (const v of model.variables()) {
    const name = v.name.slice(v.name.indexOf("/") + 1);
    if (!(gpt ? GPT2_LINEAR : LLAMA_LINEAR).test(name)) continue;
    const [a, b] = v.shape as [number, number];
    const module = name.slice(0, -".weight".length);
    out.push(
      gpt
        ? { weight: name, module: `transformer.${module}`, inDim: a, outDim: b, layout: "in-out" }
        : { weight: name, module, inDim: b, outDim: a, layout: "out-in" },
    );
  }
  return out;
}

/** Whether a module path matches a PEFT target: the whole path or a suffix after a dot. */
function matches(module: string, target: string): boolean {
  return module === target || module.endsWith(`.${target}`);
}

/** The layers `spec.targets` selects; a target that matches none is a ValidationError. */
export function targetLayers(model: CausalLM, spec: LoraSpec): LinearLayer[] {
  const all = linearLayers(model);
  for (const t of spec.targets) {
    if (!all.some((l) => matches(l.module, t)))
      throw new ValidationError(
        "run.loraTargets",
        `'${t}' names no linear layer of this ${model.kind} model (e.g. ${all[0]?.module ?? "none"})`,
      );
  }
  return spec.targets.length === 0 ? all : all.filter((l) => spec.targets.some((t) => matches(l.module, t)));
}

/** Parameter names of one layer's adapters (`<weight minus .weight>.lora_A.weight` / `lora_B`). */
export function adapterNames(layer: LinearLayer): { a: string; b: string } {
  const stem = layer.weight.slice(0, -".weight".length);
  return { a: `${stem}.lora_A.weight`, b: `${stem}.lora_B.weight` };
}

interface Adapter {
  layer: LinearLayer;
  a: tf.Variable;
  b: tf.Variable;
  /** This layer's dropout stream id. */
  stream: number;
}

let adapterCounter = 0;

/** The adapters of one model; attach with `attachLora`, dispose when done. */
export class LoraAdapters implements LinearAdapters {
  /** alpha / r, the factor on every adapter's output. */
  readonly scaling: number;
  /** Adapters by the layer weight they adapt, in parameter order. */
  private readonly byWeight = new Map<string, Adapter>();
  /** Off: the model computes its frozen base (the KL reference). */
  enabled = true;
  /**
   * Seed of the dropout masks of the next training passes, or null (no dropout: sampling,
   * scoring, reference log-probs). The learner sets it per step, so a step's masks are the same
   * on every rerun of the run.
   */
  dropoutSeed: number | null = null;

  /**
   * Adapters for `layers` from a seed (A ~ U(−1/√in, 1/√in), PEFT's kaiming-uniform with a = √5;
   * B = 0) or from saved adapter weights (WeightsError when names or shapes differ).
   */
  constructor(
    readonly spec: LoraSpec,
    readonly layers: readonly LinearLayer[],
    source: number | WeightMap,
  ) {
    this.scaling = spec.alpha / spec.rank;
    const shapes = this.shapes();
    if (typeof source !== "number") checkWeights(shapes, source);
    const unique = `lora${adapterCounter++}`;
    for (const [i, layer] of layers.entries()) {
      const names = adapterNames(layer);
      const make = (name: string, fill: (data: Float32Array) => void) => {
        const shape = shapes.get(name) as number[];
        let data: Float32Array;
        if (typeof source === "number") {
          data = new Float32Array(shape[0] * shape[1]);
          fill(data);
        } else data = Float32Array.from((source.get(name) as { data: Float32Array }).data);
        // The initial tensor is freed at once: tf.variable shares its data and would leave it
        // alive after the adapters' dispose() (see ParamModel's constructor).
        const initial = tf.tensor2d(data, shape as [number, number]);
        const v = tf.variable(initial, true, `${unique}/${name}`);
        initial.dispose();
        return v;
      };
      const bound = 1 / Math.sqrt(layer.inDim);
      const a = make(names.a, (data) => {
        const rng = new Rng(source as number, hashString(names.a));
        for (let k = 0; k < data.length; k++) data[k] = (2 * (rng.nextUint32() / 2 ** 32) - 1) * bound;
      });
      const b = make(names.b, () => {});
      this.byWeight.set(layer.weight, { layer, a, b, stream: i });
    }
  }

  /** Adapter parameter names and shapes: A [r, in], B [out, r] per layer. */
  shapes(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const layer of this.layers) {
      const names = adapterNames(layer);
      out.set(names.a, [this.spec.rank, layer.inDim]);
      out.set(names.b, [layer.outDim, this.spec.rank]);
    }
    return out;
  }

  /** The trainable variables (A, B of each layer, in layer order): all that Adam updates. */
  variables(): tf.Variable[] {
    return [...this.byWeight.values()].flatMap((x) => [x.a, x.b]);
  }

  /** The adapter variables by parameter name. */
  params(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const x of this.byWeight.values()) {
      const names = adapterNames(x.layer);
      out.set(names.a, x.a).set(names.b, x.b);
    }
    return out;
  }

  /** A copy of every adapter tensor. */
  getWeights(): WeightMap {
    return readParams(this.params());
  }

  /** Replaces every adapter tensor, all or nothing. */
  setWeights(weights: WeightMap): void {
    writeParams(this.params(), weights);
  }

  /** y + (dropout(x) Aᵀ) Bᵀ · scaling for an adapted layer; y unchanged otherwise or when off. */
  apply(weight: string, x: tf.Tensor2D, y: tf.Tensor2D, ops: LayerOps): tf.Tensor2D {
    const ad = this.enabled ? this.byWeight.get(weight) : undefined;
    if (ad === undefined) return y;
    const xin = this.dropoutSeed === null || this.spec.dropout === 0 ? x : this.drop(x, ad.stream);
    const low = ops.matmulNT(xin, ad.a as tf.Tensor2D); // [N, r]
    return tf.add(y, tf.mul(ops.matmulNT(low, ad.b as tf.Tensor2D), this.scaling)) as tf.Tensor2D; // [N, out]
  }

  /** Inverted dropout: each input kept with probability 1 − p and scaled by 1/(1 − p). */
  private drop(x: tf.Tensor2D, stream: number): tf.Tensor2D {
    const p = this.spec.dropout;
    const seed = (hashString(`${this.dropoutSeed}/${stream}`) % 2 ** 31) + 1;
    const keep = tf.cast(tf.greaterEqual(tf.randomUniform(x.shape, 0, 1, "float32", seed), p), "float32");
    return tf.mul(x, tf.mul(keep, 1 / (1 - p))) as tf.Tensor2D;
  }

  /** Frees the adapter variables. */
  dispose(): void {
    for (const v of this.variables()) v.dispose();
  }
}

/**
 * Puts LoRA adapters on `model` (a fresh set from `source` = seed, or saved adapter weights) and
 * returns them. The model's own parameters are untouched; train `adapters.variables()` only.
 * Throws ValidationError for a model family without linear layers or an unmatched target,
 * WeightsError when the model already has adapters.
 */
export function attachLora(model: CausalLM, spec: LoraSpec, source: number | WeightMap): LoraAdapters {
  if (!(model instanceof ParamModel))
    throw new ValidationError("run.loraRank", `${model.kind} models take no adapters`);
  if (model.adapters !== null) throw new WeightsError("the model already has adapters attached");
  const adapters = new LoraAdapters(spec, targetLayers(model, spec), source);
  model.adapters = adapters;
  return adapters;
}

/** The adapters attached to `model`, or null. */
export function loraOf(model: CausalLM): LoraAdapters | null {
  return model instanceof ParamModel && model.adapters instanceof LoraAdapters ? model.adapters : null;
}

/**
 * Runs `fn` with `model`'s adapters switched off (the frozen base: the KL reference), then on
 * again; a model without adapters runs as it is.
 */
export function withBase<T>(model: CausalLM, fn: () => T): T {
  const lora = loraOf(model);
  if (lora === null || !lora.enabled) return fn();
  lora.enabled = false;
  try {
    return fn();
  } finally {
    lora.enabled = true;
  }
}
