/**
 * Decoder-only GPT (pre-LN, learned absolute positions, GELU MLP, causal multi-head attention,
 * untied output head) on TensorFlow.js.
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
import { ParamModel } from "./param-model.js";
import {
  type TransformerConfig,
  transformerParameterShapes,
  validateTransformerConfig,
} from "./transformer-config.js";

export type { ForwardOptions, WeightMap } from "./causal-lm.js";

/** Per-layer attention keys and values of a prefix, each [B, H, S, D] (concatenated along S). */
export interface KVCache {
  layers: { k: tf.Tensor4D; v: tf.Tensor4D }[];
}

const OPS = { train: L.TRAIN_OPS, inference: L.INFERENCE_OPS, reference: L.REFERENCE_OPS };

/** A GPT whose parameters are named `tf.Variable`s. Dispose it when done. */
export class TransformerLM extends ParamModel implements CausalLM {
  /** Model family, as written in checkpoints. */
  readonly kind = "transformer" as const;
  /** Validated hyperparameters. */
  readonly config: TransformerConfig;
  private readonly headDim: number;

  /**
   * Creates the parameters deterministically from `seed`: each parameter draws from its own RNG
   * stream (seed, hash(name)), so the same seed gives the same weights on every backend.
   * Weights ~ N(0, 0.02), residual projections ~ N(0, 0.02/√(2·nLayers)) (GPT-2), biases 0,
   * LayerNorm gains 1.
   */
  constructor(config: TransformerConfig, seed: number) {
    const c = validateTransformerConfig(config);
    const projStd = 0.02 / Math.sqrt(2 * c.nLayers);
    super("transformer", transformerParameterShapes(c), seed, (name, _shape, data, rng) => {
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
    const { linear: lin, layerNorm: ln, gelu: act, embedding: emb, matmul: mm } = ops;

    // x = E_tok[tokens] + E_pos[positions]
    const tokIds = tokens.reshape([b * s]).cast("int32") as tf.Tensor1D; // [B*S]
    const posIds = positions.reshape([b * s]).cast("int32") as tf.Tensor1D; // [B*S]
    let x = tf.add(emb(this.p("wte"), tokIds), emb(this.p("wpe"), posIds)) as tf.Tensor2D; // [B*S, C]
    const bias = attentionBias(b, h, s, prev, keyMask); // [B, H, S, P+S]
    const cache: KVCache = { layers: [] };
    for (let i = 0; i < this.config.nLayers; i++) {
      const w = (name: string) => this.p<tf.Tensor2D>(`h.${i}.${name}`);
      const bv = (name: string) => this.p<tf.Tensor1D>(`h.${i}.${name}`);
      // qkv = LN₁(x) W_attn + b_attn
      const h1 = ln(x, bv("ln_1.weight"), bv("ln_1.bias")); // [B*S, C]
      const qkv = lin(h1, w("attn.c_attn.weight"), bv("attn.c_attn.bias")); // [B*S, 3C]
      let [q, kh, vh] = qkvHeads(qkv, b, s, h, d); // [B, H, S, D] each
      // q = q / √D
      q = tf.mul(q, 1 / Math.sqrt(d)); // [B, H, S, D]
      const layerPast = past?.layers[i];
      if (layerPast !== undefined) {
        kh = tf.concat([layerPast.k, kh], 2); // [B, H, P+S, D]
        vh = tf.concat([layerPast.v, vh], 2); // [B, H, P+S, D]
      }
      cache.layers.push({ k: kh, v: vh });
      // A = softmax(q kᵀ + bias)
      const att = tf.softmax(tf.add(ops.matmulNT(q, kh), bias)); // [B, H, S, P+S]
      // y = A v, heads merged back
      const y = mergeHeads(mm(att as tf.Tensor4D, vh), b, s, c); // [B*S, C]
      // x = x + y W_proj + b_proj
      x = tf.add(x, lin(y, w("attn.c_proj.weight"), bv("attn.c_proj.bias"))); // [B*S, C]
      // x = x + GELU(LN₂(x) W_fc + b_fc) W_mlp + b_mlp
      const h2 = ln(x, bv("ln_2.weight"), bv("ln_2.bias")); // [B*S, C]
      const hid = act(lin(h2, w("mlp.c_fc.weight"), bv("mlp.c_fc.bias"))); // [B*S, 4C]
      x = tf.add(x, lin(hid, w("mlp.c_proj.weight"), bv("mlp.c_proj.bias"))); // [B*S, C]
    }
    // logits = LN_f(x) W_head
    const hf = ln(x, this.p("ln_f.weight"), this.p("ln_f.bias")); // [B*S, C]
    const logits = mm(hf, this.p("lm_head.weight")); // [B*S, V]
    return { logits: tf.reshape(logits, [b, s, v]) as tf.Tensor3D, cache };
  }
}

/**
 * Additive attention bias [B, H, S, P+S], built in JS: query i (absolute index P+i) may see key j
 * iff j ≤ P+i and keyMask[j] = 1. Materialised at full score shape once per forward because
 * broadcasting kernels (Tile, broadcast adds) are very slow on wasm.
 */
function attentionBias(
  b: number,
  h: number,
  s: number,
  prev: number,
  keyMask: tf.Tensor2D | null,
): tf.Tensor4D {
  const total = prev + s;
  let mask: Float32Array | Int32Array | Uint8Array | null = null;
  if (keyMask !== null) {
    if (keyMask.shape[0] !== b || keyMask.shape[1] !== total) {
      throw new ValidationError("keyMask", `must be [${b}, ${total}], got [${keyMask.shape}]`);
    }
    mask = keyMask.dataSync() as Float32Array | Int32Array | Uint8Array;
  }
  const row = s * total;
  const bias = new Float32Array(b * h * row);
  for (let r = 0; r < b; r++) {
    const base = r * h * row;
    for (let i = 0; i < s; i++) {
      for (let j = 0; j < total; j++) {
        if (j > prev + i || (mask !== null && mask[r * total + j] === 0))
          bias[base + i * total + j] = L.MASKED;
      }
    }
    for (let k = 1; k < h; k++) bias.copyWithin(base + k * row, base, base + row);
  }
  return tf.tensor4d(bias, [b, h, s, total]);
}

/**
 * [B*S, 3C] rows of q | k | v → q, k, v heads [B, H, S, D] each: for S > 1 one Transpose of
 * [B, S, 3H, D] into [B, 3H, S, D] and a split along the head axis (each part B contiguous
 * blocks), a third of the kernels of splitting first and transposing q, k and v apart; for S = 1
 * (every decoding step) a split and pure reshapes.
 */
function qkvHeads(qkv: tf.Tensor2D, b: number, s: number, h: number, d: number): tf.Tensor4D[] {
  if (s === 1) return tf.split(qkv, 3, 1).map((x) => tf.reshape(x, [b, h, 1, d]) as tf.Tensor4D);
  return tf.split(tf.transpose(tf.reshape(qkv, [b, s, 3 * h, d]), [0, 2, 1, 3]), 3, 1) as tf.Tensor4D[];
}

/** [B, H, S, D] heads → [B*S, C] rows (the inverse of `qkvHeads` for one of q, k, v). */
function mergeHeads(y: tf.Tensor4D, b: number, s: number, c: number): tf.Tensor2D {
  return tf.reshape(s === 1 ? y : tf.transpose(y, [0, 2, 1, 3]), [b * s, c]);
}

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
