/**
 * The Llama family's layer maths shared by its full forward pass (hf-llama.ts) and its row
 * decoder (hf-llama-decoder.ts): RMSNorm, the SwiGLU MLP, rotary position embeddings and
 * grouped-query attention, written from transformers' modeling_llama.py.
 *
 * Why grouped attention by reshape: query head j reads kv head ⌊j / G⌋ (G = heads / kv heads), and
 * heads are contiguous, so q [B, H, S, D] viewed as [B, KV, G·S, D] lines every query row up with
 * its kv head; no repeated copy of the keys and values is made, and the KV cache holds KV heads
 * only. All functions expect to be called inside `tf.tidy`.
 */
import * as tf from "@tensorflow/tfjs";
import type * as L from "./layers.js";

/** RMSNorm over rows x [N, C]: w · x / √(mean(x²) + ε) (stock autodiff). */
export function rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  // x · rsqrt(mean_c x² + ε) · w
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), w) as tf.Tensor2D;
}

/**
 * SwiGLU MLP on rows x [N, C]: down(silu(gate(x)) ⊙ up(x)); `linear(part, x)` applies the layer
 * `mlp.<part>` (x Wᵀ with W stored [out, in], plus any adapter of the model).
 */
export function swiGlu(
  x: tf.Tensor2D,
  linear: (part: "gate_proj" | "up_proj" | "down_proj", x: tf.Tensor2D) => tf.Tensor2D,
): tf.Tensor2D {
  const g = linear("gate_proj", x); // [N, F]
  // silu(g) = g σ(g)
  const hid = tf.mul(tf.mul(g, tf.sigmoid(g)), linear("up_proj", x)) as tf.Tensor2D; // [N, F]
  return linear("down_proj", hid); // [N, C]
}

/**
 * cos and sin tables [B, 1, S, D] of RoPE for per-row positions [B·S] (row-major [B, S]):
 * angle(p, j) = p · θ^(−2(j mod D/2)/D), the two halves repeated (transformers' `cat(freqs, freqs)`).
 * Built in JS; the inverse frequencies are rounded to float32 as transformers computes them.
 */
export function ropeTables(
  positions: ArrayLike<number>,
  b: number,
  s: number,
  d: number,
  theta: number,
): { cos: tf.Tensor4D; sin: tf.Tensor4D } {
  const half = d / 2;
  const inv = Float32Array.from({ length: half }, (_, i) => 1 / theta ** Math.fround((2 * i) / d));
  const cos = new Float32Array(b * s * d);
  const sin = new Float32Array(b * s * d);
  for (let r = 0; r < b * s; r++) {
    const p = positions[r] as number;
    for (let j = 0; j < d; j++) {
      const a = Math.fround(p * (inv[j % half] as number));
      cos[r * d + j] = Math.cos(a);
      sin[r * d + j] = Math.sin(a);
    }
  }
  return { cos: tf.tensor4d(cos, [b, 1, s, d]), sin: tf.tensor4d(sin, [b, 1, s, d]) };
}

/** x cos + rotate_half(x) sin for heads x [B, h, S, D], rotate_half(x) = (−x₂, x₁) by halves. */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D {
  const [x1, x2] = tf.split(x, 2, 3) as [tf.Tensor4D, tf.Tensor4D];
  const rotated = tf.concat([tf.neg(x2), x1], 3); // [B, h, S, D]
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
}

/** Rows [B·S, h·D] → heads [B, h, S, D]. */
export function toHeads(x: tf.Tensor2D, b: number, s: number, h: number, d: number): tf.Tensor4D {
  if (s === 1) return tf.reshape(x, [b, h, 1, d]);
  return tf.transpose(tf.reshape(x, [b, s, h, d]), [0, 2, 1, 3]);
}

/**
 * softmax(q kᵀ + bias) v for queries q [B, H, S, D] (already scaled by 1/√D), keys and values
 * [B, KV, T, D] and the additive bias [B, H, S, T] (attentionBias's layout): [B, H, S, D].
 */
export function groupedAttention(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  bias: tf.Tensor4D,
  ops: L.LayerOps,
): tf.Tensor4D {
  const [b, h, s, d] = q.shape;
  const kv = k.shape[1];
  const t = k.shape[2];
  const rows = (h / kv) * s;
  const qg = tf.reshape(q, [b, kv, rows, d]); // [B, KV, G·S, D]
  // A = softmax(q kᵀ + bias)
  const att = tf.softmax(tf.add(ops.matmulNT(qg, k), tf.reshape(bias, [b, kv, rows, t]))); // [B, KV, G·S, T]
  // y = A v
  return tf.reshape(ops.matmul(att as tf.Tensor4D, v), [b, h, s, d]); // [B, H, S, D]
}
