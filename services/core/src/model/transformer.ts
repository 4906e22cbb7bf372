/**
 * Decoder-only GPT (pre-LN, learned absolute positions, GELU MLP, causal multi-head attention,
 * untied output head, or tied to the embedding for GPT-2 checkpoints: hf-gpt2.ts) on TensorFlow.js.
 *
 * One code path serves training (full sequences, differentiable, right padding handled by the
 * causal mask plus a loss mask), batched generation (left-padded prompts with per-row position
 * ids and a key padding mask, so a row's log-probs do not depend on its padding) and incremental
 * decoding with a KV cache. Masked keys get a -1e9 bias, so their softmax weight is exactly 0.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import { type CausalLM, type DecodingState, disposeState, type ForwardOptions } from "./causal-lm.js";
import * as L from "./layers.js";
import { ParamModel, type ParamSource } from "./param-model.js";
import type { RowDecoder } from "./row-decoder.js";
import { attentionBias, mergeHeads, qkvHeads } from "./transformer-attention.js";
import {
  type TransformerConfig,
  transformerParameterShapes,
  validateTransformerConfig,
} from "./transformer-config.js";
import { TransformerDecoder } from "./transformer-decoder.js";

export type { ForwardOptions, WeightMap } from "./causal-lm.js";

/** Per-layer attention keys and values of a prefix, each [B, H, S, D] (concatenated along S). */
export interface KVCache {
  layers: { k: tf.Tensor4D; v: tf.Tensor4D }[];
}

const OPS = { train: L.TRAIN_OPS, inference: L.INFERENCE_OPS, reference: L.REFERENCE_OPS };

/** A GPT whose parameters are named `tf.Variable`s. Dispose it when done. */
export class TransformerLM extends ParamModel implements CausalLM {
  /** Model family, as written in checkpoints (a GPT-2 checkpoint's subclass says "hf-gpt2"). */
  readonly kind: "transformer" | "hf-gpt2" = "transformer";
  /** Validated hyperparameters. */
  readonly config: TransformerConfig;
  private readonly headDim: number;

  /**
   * Creates the parameters from `source`: given weights (a checkpoint's) as they are, or a seed,
   * deterministically: each parameter draws from its own RNG stream (seed, hash(name)), so the
   * same seed gives the same weights on every backend. Weights ~ N(0, 0.02), residual projections ~ N(0, 0.02/√(2·nLayers)) (GPT-2), biases 0,
   * LayerNorm gains 1. `tiedHead`: no `lm_head.weight`, the logits use `wte` (GPT-2's layout).
   */
  constructor(config: TransformerConfig, source: ParamSource, tiedHead = false) {
    const c = validateTransformerConfig(config);
    const projStd = 0.02 / Math.sqrt(2 * c.nLayers);
    const shapes = transformerParameterShapes(c);
    if (tiedHead) shapes.delete("lm_head.weight");
    super("transformer", shapes, source, (name, _shape, data, rng) => {
      if (name.endsWith(".bias")) return; // zeros
      if (name.includes("ln_")) data.fill(1);
      else {
        const std = name.endsWith("c_proj.weight") ? projStd : 0.02;
        for (let i = 0; i < data.length; i++) data[i] = rng.nextNormal() * std;
      }
    });
    this.config = c;
    this.headDim = c.dModel / c.nHeads;
  }

  /**
   * Logits [B, T, V] for int32 tokens [B, T]. `positions` [B, T] (default 0..T-1 on every row)
   * are per-row position ids, needed for left-padded rows; `options.keyMask` hides padding.
   */
  forward(tokens: tf.Tensor2D, positions?: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    const [b, t] = tokens.shape;
    if (tokens.rank !== 2 || t < 1)
      throw new ValidationError("tokens", `must be [B, T], got [${tokens.shape}]`);
    if (t > this.config.contextLength && positions === undefined) {
      throw new ValidationError("tokens", `length ${t} exceeds contextLength ${this.config.contextLength}`);
    }
    return tf.tidy(() => {
      const pos = positions ?? defaultPositions(b, t);
      return this.run(tokens, pos, options.keyMask ?? null, null, OPS[options.ops ?? "train"]).logits;
    });
  }

  /**
   * Incremental forward for generation: `tokens`/`positions` [B, S] follow the `past` prefix
   * (null for the first call); `keyMask` [B, P + S] covers prefix and new tokens. Returns logits
   * [B, S, V] and the cache extended by S positions. The caller owns both and disposes the old
   * cache itself (`disposeCache`); nothing here is differentiable by intent.
   */
  step(
    tokens: tf.Tensor2D,
    positions: tf.Tensor2D,
    keyMask: tf.Tensor2D,
    past: DecodingState | null,
  ): { logits: tf.Tensor3D; cache: KVCache } {
    type Out = { logits: tf.Tensor3D; cache: KVCache };
    // tidy keeps every tensor reachable from the returned object (logits and the new cache).
    return tf.tidy(
      () =>
        this.run(
          tokens,
          positions,
          keyMask,
          past as KVCache | null,
          L.INFERENCE_OPS,
        ) as unknown as tf.TensorContainer,
    ) as unknown as Out;
  }

  /** A decoder of up to `capacity` rows with a preallocated KV cache (see transformer-decoder.ts). */
  decoder(capacity: number): RowDecoder {
    return new TransformerDecoder(this, capacity);
  }

  /** x = E_tok[tokens] + E_pos[positions]: rows [N, C] for int32 ids [N] (shared with the decoder). */
  embed(tokIds: tf.Tensor1D, posIds: tf.Tensor1D, ops: L.LayerOps): tf.Tensor2D {
    return tf.add(ops.embedding(this.p("wte"), tokIds), ops.embedding(this.p("wpe"), posIds)) as tf.Tensor2D;
  }

  /**
   * The blocks and the final LayerNorm over token rows x [N, C]. `attend(i, qkv)` turns layer i's
   * projections q | k | v [N, 3C] into its attention output [N, C]: forward, `step` and the row
   * decoder differ only in where the keys and values live.
   */
  blocks(x: tf.Tensor2D, attend: Attend, ops: L.LayerOps): tf.Tensor2D {
    const { linear: lin, layerNorm: ln, gelu: act } = ops;
    for (let i = 0; i < this.config.nLayers; i++) {
      const bv = (name: string) => this.p<tf.Tensor1D>(`h.${i}.${name}`);
      // x W + b for layer `name` (plus its LoRA term when adapters are attached)
      const affine = (name: string, xs: tf.Tensor2D) => {
        const weight = `h.${i}.${name}.weight`;
        return this.adapt(weight, xs, lin(xs, this.p(weight), bv(`${name}.bias`)), ops);
      };
      // qkv = LN₁(x) W_attn + b_attn
      const h1 = ln(x, bv("ln_1.weight"), bv("ln_1.bias")); // [N, C]
      const qkv = affine("attn.c_attn", h1); // [N, 3C]
      // y = softmax(q kᵀ / √D + bias) v, heads merged back
      const y = attend(i, qkv); // [N, C]
      // x = x + y W_proj + b_proj
      x = tf.add(x, affine("attn.c_proj", y)); // [N, C]
      // x = x + GELU(LN₂(x) W_fc + b_fc) W_mlp + b_mlp
      const h2 = ln(x, bv("ln_2.weight"), bv("ln_2.bias")); // [N, C]
      const hid = act(affine("mlp.c_fc", h2)); // [N, 4C]
      x = tf.add(x, affine("mlp.c_proj", hid)); // [N, C]
    }
    // LN_f(x)
    return ops.layerNorm(x, this.p("ln_f.weight"), this.p("ln_f.bias")); // [N, C]
  }

  /** logits = h W_head for final hidden rows h [N, C] (tied: h wteᵀ): [N, V]. */
  head(h: tf.Tensor2D, ops: L.LayerOps): tf.Tensor2D {
    const head = this.params.get("lm_head.weight");
    return head === undefined ? ops.matmulNT(h, this.p("wte")) : ops.matmul(h, head);
  }

  private run(
    tokens: tf.Tensor2D,
    positions: tf.Tensor2D,
    keyMask: tf.Tensor2D | null,
    past: KVCache | null,
    ops: L.LayerOps,
  ): { logits: tf.Tensor3D; cache: KVCache } {
    const { nHeads: h, dModel: c, vocabSize: v } = this.config;
    const d = this.headDim;
    const [b, s] = tokens.shape;
    const prev = past === null ? 0 : (past.layers[0]?.k.shape[2] ?? 0);
    const tokIds = tokens.reshape([b * s]).cast("int32") as tf.Tensor1D; // [B*S]
    const posIds = positions.reshape([b * s]).cast("int32") as tf.Tensor1D; // [B*S]
    // A full causal pass (training, scoring) keeps no cache: the fused kernel may serve it.
    const fused = past === null && keyMask === null ? ops.causalAttention : undefined;
    let bias: tf.Tensor4D | null = null;
    const cache: KVCache = { layers: [] };
    const attend: Attend = (i, qkv) => {
      const y = fused?.(qkv, b, h) ?? null;
      if (y !== null) return y; // [B*S, C]
      bias ??= attentionBias(b, h, s, prev, keyMask); // [B, H, S, P+S]
      let [q, kh, vh] = qkvHeads(qkv, b, s, h, d); // [B, H, S, D] each
      // q = q / √D
      q = tf.mul(q, 1 / Math.sqrt(d)) as tf.Tensor4D; // [B, H, S, D]
      const layerPast = past?.layers[i];
      if (layerPast !== undefined) {
        kh = tf.concat([layerPast.k, kh], 2); // [B, H, P+S, D]
        vh = tf.concat([layerPast.v, vh], 2); // [B, H, P+S, D]
      }
      cache.layers.push({ k: kh, v: vh });
      // A = softmax(q kᵀ + bias)
      const att = tf.softmax(tf.add(ops.matmulNT(q, kh), bias)); // [B, H, S, P+S]
      // y = A v, heads merged back
      return mergeHeads(ops.matmul(att as tf.Tensor4D, vh), b, s, c); // [B*S, C]
    };
    const hf = this.blocks(this.embed(tokIds, posIds, ops), attend, ops); // [B*S, C]
    return { logits: tf.reshape(this.head(hf, ops), [b, s, v]) as tf.Tensor3D, cache };
  }
}

/**
 * Layer i's attention: the token rows' projections q | k | v [N, 3C] to the attention output
 * [N, C]. (See `TransformerLM.blocks`.)
 */
export type Attend = (layer: number, qkv: tf.Tensor2D) => tf.Tensor2D;

/** Position ids 0..T-1 on every row, built in JS (Tile is slow on wasm). */
function defaultPositions(b: number, t: number): tf.Tensor2D {
  const ids = new Int32Array(b * t);
  for (let i = 0; i < ids.length; i++) ids[i] = i % t;
  return tf.tensor2d(ids, [b, t], "int32");
}

/** Disposes every tensor of a KV cache (or of any model's decoding state). */
export function disposeCache(cache: DecodingState | null): void {
  disposeState(cache);
}

/** A fresh model from `config` and `seed` (see `TransformerLM`'s constructor for the init scheme). */
export function createTransformer(config: TransformerConfig, seed: number): TransformerLM {
  return new TransformerLM(config, seed);
}
