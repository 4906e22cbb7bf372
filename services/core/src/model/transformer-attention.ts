/**
 * The Transformer's attention plumbing shared by its full forward pass (transformer.ts) and its
 * row decoder (transformer-decoder.ts): the additive mask bias and the split into heads.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import * as L from "./layers.js";

/**
 * Additive attention bias [B, H, S, P+S], built in JS: query i (absolute index P+i) may see key j
 * iff j ≤ P+i and keyMask[j] = 1. Materialised at full score shape once per forward because
 * broadcasting kernels (Tile, broadcast adds) are very slow on wasm.
 */
export function attentionBias(
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
export function qkvHeads(qkv: tf.Tensor2D, b: number, s: number, h: number, d: number): tf.Tensor4D[] {
  if (s === 1) return tf.split(qkv, 3, 1).map((x) => tf.reshape(x, [b, h, 1, d]) as tf.Tensor4D);
  return tf.split(tf.transpose(tf.reshape(qkv, [b, s, 3 * h, d]), [0, 2, 1, 3]), 3, 1) as tf.Tensor4D[];
}

/** [B, H, S, D] heads → [B*S, C] rows (the inverse of `qkvHeads` for one of q, k, v). */
export function mergeHeads(y: tf.Tensor4D, b: number, s: number, c: number): tf.Tensor2D {
  return tf.reshape(s === 1 ? y : tf.transpose(y, [0, 2, 1, 3]), [b * s, c]);
}
