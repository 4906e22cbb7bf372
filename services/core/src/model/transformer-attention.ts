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

/** [B*S, C] rows → [B, H, S, D] heads (a pure reshape when S = 1, as in every decoding step). */
export function heads(x: tf.Tensor2D, b: number, s: number, h: number, d: number): tf.Tensor4D {
  return s === 1 ? tf.reshape(x, [b, h, 1, d]) : tf.transpose(tf.reshape(x, [b, s, h, d]), [0, 2, 1, 3]);
}

/** [B, H, S, D] heads → [B*S, C] rows (inverse of `heads`). */
export function mergeHeads(y: tf.Tensor4D, b: number, s: number, c: number): tf.Tensor2D {
  return tf.reshape(s === 1 ? y : tf.transpose(y, [0, 2, 1, 3]), [b * s, c]);
}
