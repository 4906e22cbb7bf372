/**
 * The Llama family (`LlamaForCausalLM`, `Qwen2ForCausalLM`) as a `CausalLM`: pre-RMSNorm blocks,
 * rotary positions, grouped-query attention, a SwiGLU MLP, a tied or separate head; Qwen2 adds
 * biases to the q, k and v projections.
 *
 * Parameters carry the Hugging Face names and layouts unchanged (`model.layers.0.self_attn.q_proj.weight`,
 * nn.Linear's [out, in]), multiplied as x Wᵀ: a directory loads without renaming or transposing,
 * and an export writes the same names and shapes back. One code path (`blocks` with an `attend`
 * callback, as in transformer.ts) serves training, `step` with a KV cache of the kv heads, and the
 * row decoder. Masked keys get a −1e9 bias, so their softmax weight is exactly 0.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import { type CausalLM, checkForwardInputs, type DecodingState, type ForwardOptions } from "./causal-lm.js";
import type { HfLlamaConfig } from "./hf-config.js";
import type { HfModelExtras } from "./hf-gpt2.js";
import { applyRope, groupedAttention, rmsNorm, ropeTables, swiGlu, toHeads } from "./hf-llama-attention.js";
import { HfLlamaDecoder } from "./hf-llama-decoder.js";
import type { HfOrigin } from "./hf-origin.js";
import { hfLlamaParameterShapes } from "./hf-parameters.js";
import * as L from "./layers.js";
import { ParamModel, type ParamSource } from "./param-model.js";
import type { RowDecoder } from "./row-decoder.js";
import type { Tokenizer } from "./tokenizer-types.js";
import { attentionBias, mergeHeads } from "./transformer-attention.js";

/** Per-layer keys (RoPE applied) and values of a prefix, each [B, KV, S, D]. */
export interface LlamaCache {
  layers: { k: tf.Tensor4D; v: tf.Tensor4D }[];
}

/**
 * Layer i's attention from its projections q [N, H·D] and k, v [N, KV·D] (before RoPE) to the
 * merged heads [N, H·D]: forward, `step` and the row decoder differ only in where keys live.
 */
export type LlamaAttend = (layer: number, q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D) => tf.Tensor2D;

const OPS = { train: L.TRAIN_OPS, inference: L.INFERENCE_OPS, reference: L.REFERENCE_OPS };

/** A Llama or Qwen2 whose parameters are named `tf.Variable`s. Dispose it when done. */
export class HfLlamaLM extends ParamModel implements CausalLM {
  /** Model family, as written in checkpoints. */
  readonly kind = "hf-llama" as const;
  /** Validated hyperparameters. */
  readonly config: HfLlamaConfig;
  /** The tokenizer of the directory it came from (see CausalLM.tokenizer). */
  readonly tokenizer?: Tokenizer;
  /** See CausalLM.origin. */
  readonly origin?: HfOrigin;

  /**
   * Creates the parameters from `source`: given weights as they are, or a seed (weights
   * ~ N(0, 0.02) as transformers initialises them, norm gains 1, biases 0; each parameter from
   * its own RNG stream, see ParamModel).
   */
  constructor(config: HfLlamaConfig, source: ParamSource, extras: HfModelExtras = {}) {
    super("hf-llama", hfLlamaParameterShapes(config), source, (name, _shape, data, rng) => {
      if (name.endsWith(".bias")) return;
      if (name.endsWith("norm.weight")) data.fill(1);
      else for (let i = 0; i < data.length; i++) data[i] = rng.nextNormal() * 0.02;
    });
    this.config = config;
    if (extras.tokenizer) this.tokenizer = extras.tokenizer;
    if (extras.origin) this.origin = extras.origin;
  }

  /** Logits [B, T, V] for int32 tokens [B, T] at `positions` (default 0..T−1), differentiable. */
  forward(tokens: tf.Tensor2D, positions?: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    checkForwardInputs(tokens, options.keyMask);
    const [b, t] = tokens.shape;
    if (t > this.config.contextLength && positions === undefined)
      throw new ValidationError("tokens", `length ${t} exceeds contextLength ${this.config.contextLength}`);
    return tf.tidy(() => {
      const pos =
        positions ??
        tf.tensor2d(
          Int32Array.from({ length: b * t }, (_, i) => i % t),
          [b, t],
          "int32",
        );
      return this.run(tokens, pos, options.keyMask ?? null, null, OPS[options.ops ?? "train"]).logits;
    });
  }

  /** Incremental forward (see CausalLM.step): the cache holds every layer's keys and values. */
  step(
    tokens: tf.Tensor2D,
    positions: tf.Tensor2D,
    keyMask: tf.Tensor2D,
    past: DecodingState | null,
  ): { logits: tf.Tensor3D; cache: LlamaCache } {
    type Out = { logits: tf.Tensor3D; cache: LlamaCache };
    return tf.tidy(
      () =>
        this.run(
          tokens,
          positions,
          keyMask,
          past as LlamaCache | null,
          L.INFERENCE_OPS,
        ) as unknown as tf.TensorContainer,
    ) as unknown as Out;
  }

  /** A decoder of up to `capacity` rows with a preallocated KV cache (see hf-llama-decoder.ts). */
  decoder(capacity: number): RowDecoder {
    return new HfLlamaDecoder(this, capacity);
  }

  /** Token rows [N, C] for int32 ids [N]. */
  embed(ids: tf.Tensor1D, ops: L.LayerOps): tf.Tensor2D {
    return ops.embedding(this.p("model.embed_tokens.weight"), ids);
  }

  /** The blocks and the final norm over token rows x [N, C] (see LlamaAttend). */
  blocks(x: tf.Tensor2D, attend: LlamaAttend, ops: L.LayerOps): tf.Tensor2D {
    const eps = this.config.rmsNormEps;
    const qwen = this.config.family === "qwen2";
    for (let i = 0; i < this.config.nLayers; i++) {
      const w = <T extends tf.Tensor>(name: string) => this.p<T>(`model.layers.${i}.${name}`);
      // q, k, v = RMSNorm₁(x) Wᵀ (+ b for Qwen2)
      const h1 = rmsNorm(x, w("input_layernorm.weight"), eps); // [N, C]
      // xs Wᵀ for layer `name` (plus its LoRA term when adapters are attached)
      const linear = (name: string, xs: tf.Tensor2D) => {
        const weight = `model.layers.${i}.${name}.weight`;
        return this.adapt(weight, xs, ops.matmulNT(xs, this.p(weight)), ops);
      };
      const proj = (name: string) => {
        const y = linear(`self_attn.${name}`, h1);
        return qwen ? (tf.add(y, w(`self_attn.${name}.bias`)) as tf.Tensor2D) : y;
      };
      const y = attend(i, proj("q_proj"), proj("k_proj"), proj("v_proj")); // [N, H·D]
      // x = x + y W_oᵀ
      x = tf.add(x, linear("self_attn.o_proj", y));
      // x = x + SwiGLU(RMSNorm₂(x))
      const h2 = rmsNorm(x, w("post_attention_layernorm.weight"), eps);
      x = tf.add(
        x,
        swiGlu(h2, (part, xs) => linear(`mlp.${part}`, xs)),
      );
    }
    return rmsNorm(x, this.p("model.norm.weight"), eps); // [N, C]
  }

  /** logits = h Wᵀ for final rows h [N, C], W = lm_head or (tied) embed_tokens: [N, V]. */
  head(h: tf.Tensor2D, ops: L.LayerOps): tf.Tensor2D {
    const name = this.config.tiedHead ? "model.embed_tokens.weight" : "lm_head.weight";
    return ops.matmulNT(h, this.p(name));
  }

  private run(
    tokens: tf.Tensor2D,
    positions: tf.Tensor2D,
    keyMask: tf.Tensor2D | null,
    past: LlamaCache | null,
    ops: L.LayerOps,
  ): { logits: tf.Tensor3D; cache: LlamaCache } {
    const { nHeads: h, nKvHeads: kv, headDim: d, vocabSize: v, ropeTheta } = this.config;
    const [b, s] = tokens.shape;
    const prev = past === null ? 0 : (past.layers[0]?.k.shape[2] ?? 0);
    const ids = tokens.reshape([b * s]).cast("int32") as tf.Tensor1D;
    const { cos, sin } = ropeTables(positions.dataSync(), b, s, d, ropeTheta);
    const bias = attentionBias(b, h, s, prev, keyMask); // [B, H, S, P+S]
    const cache: LlamaCache = { layers: [] };
    const attend: LlamaAttend = (i, q2, k2, v2) => {
      // q' = RoPE(q) / √D,  k' = RoPE(k)
      const q = tf.mul(applyRope(toHeads(q2, b, s, h, d), cos, sin), 1 / Math.sqrt(d)) as tf.Tensor4D;
      let k = applyRope(toHeads(k2, b, s, kv, d), cos, sin); // [B, KV, S, D]
      let vh = toHeads(v2, b, s, kv, d); // [B, KV, S, D]
      const layerPast = past?.layers[i];
      if (layerPast !== undefined) {
        k = tf.concat([layerPast.k, k], 2); // [B, KV, P+S, D]
        vh = tf.concat([layerPast.v, vh], 2);
      }
      cache.layers.push({ k, v: vh });
      return mergeHeads(groupedAttention(q, k, vh, bias, ops), b, s, h * d); // [B·S, H·D]
    };
    const hf = this.blocks(this.embed(ids, ops), attend, ops); // [B·S, C]
    return { logits: tf.reshape(this.head(hf, ops), [b, s, v]) as tf.Tensor3D, cache };
  }
}
