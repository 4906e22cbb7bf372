/**
 * The Transformer's row decoder: a KV cache preallocated per slot, at absolute positions.
 *
 * Layout: per layer, K and V buffers [capacity, H, W, D] with W = contextLength; the key and value
 * of a row's token at position p live in column p of its slot. A step writes every row's new key
 * and value into its column in place and attends over all W columns with bias 0 for j ≤ p and
 * −1e9 beyond. Why the full width: a row then reads its keys from the same columns in the same
 * order whatever the other rows are (their lengths, when they joined), and a softmax's bits depend
 * on its width, so a fixed width is what keeps a row bit-identical alone or batched (see
 * row-decoder.ts). Measured for 64 rows of the default model (contextLength 64) on wasm: the
 * in-place writes take 0.1 ms a step where the per-token concat took 0.9 ms and grew; the wider
 * attention costs more than a prefix-wide one only where the batched matmul is the slow loop.
 *
 * Prefill: the distinct prompts of one width bucket, right-padded to the bucket (a causal mask
 * keeps the padding out of every real position), in one pass; each prompt's keys and values are
 * copied into the slots of all its samples, and only the last real position goes through the head.
 */
import * as tf from "@tensorflow/tfjs";
import { KvSlots, stepBias } from "./kv-slots.js";
import * as L from "./layers.js";
import { type RowDecoder, readPass, widthBucket } from "./row-decoder.js";
import type { Attend, TransformerLM } from "./transformer.js";
import { attentionBias, mergeHeads, qkvHeads } from "./transformer-attention.js";

const OPS = L.INFERENCE_OPS;

/** Slots of a Transformer's decoding state (see the module doc). */
export class TransformerDecoder implements RowDecoder {
  private readonly slots: KvSlots;

  constructor(
    private readonly model: TransformerLM,
    capacity: number,
  ) {
    const { nLayers, nHeads, dModel, contextLength } = model.config;
    this.slots = new KvSlots(nLayers, nHeads, contextLength, dModel / nHeads, capacity);
  }

  get capacity(): number {
    return this.slots.capacity;
  }

  resize(capacity: number, keep: readonly number[]): void {
    this.slots.resize(capacity, keep);
  }

  prefillKey(length: number): number {
    return widthBucket(length, this.model.config.contextLength);
  }

  prefill(prompts: readonly (readonly number[])[], slots: readonly (readonly number[])[]): Float32Array {
    const { nHeads: h, dModel: c, contextLength } = this.model.config;
    const d = c / h;
    const n = prompts.length;
    const width = widthBucket(Math.max(...prompts.map((p) => p.length)), contextLength);
    const tok = new Int32Array(n * width);
    const pos = new Int32Array(n * width);
    prompts.forEach((p, r) => {
      tok.set(p, r * width);
      for (let j = 0; j < width; j++) pos[r * width + j] = j;
    });
    return readPass(() => {
      const bias = attentionBias(n, h, width, 0, null); // [n, H, W', W'] causal
      const attend: Attend = (i, qkv) => {
        const [qh, kh, vh] = qkvHeads(qkv, n, width, h, d) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D]; // [n, H, W', D] each
        const q = tf.mul(qh, 1 / Math.sqrt(d)) as tf.Tensor4D; // q / √D
        this.slots.copyPrompts(i, kh, vh, width, slots);
        // A = softmax(q kᵀ + bias);  y = A v
        const att = tf.softmax(tf.add(OPS.matmulNT(q, kh), bias)) as tf.Tensor4D; // [n, H, W', W']
        return mergeHeads(OPS.matmul(att, vh), n, width, c); // [n·W', C]
      };
      const x = this.model.embed(tf.tensor1d(tok, "int32"), tf.tensor1d(pos, "int32"), OPS);
      const hf = this.model.blocks(x, attend, OPS); // [n·W', C]
      const last = tf.tensor1d(
        prompts.map((p, r) => r * width + p.length - 1),
        "int32",
      );
      return this.model.head(tf.gather(hf, last), OPS); // [n·V]
    });
  }

  step(tokens: Int32Array, positions: Int32Array): Float32Array {
    const { nHeads: h, dModel: c, contextLength: w } = this.model.config;
    const d = c / h;
    const cap = tokens.length;
    const bias = stepBias(positions, h, w); // key j of slot s is visible iff j ≤ positions[s]
    return readPass(() => {
      const biasT = tf.tensor4d(bias, [cap, h, 1, w]);
      const attend: Attend = (i, qkv) => {
        const [q2, k2, v2] = tf.split(qkv, 3, 1) as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D]; // [cap, C] each
        this.slots.writeColumns(i, k2, v2, positions);
        const q = tf.mul(tf.reshape(q2, [cap, h, 1, d]), 1 / Math.sqrt(d)) as tf.Tensor4D; // q / √D
        const { k: kc, v: vc } = this.slots.tensors(i); // [cap, H, W, D] each
        // A = softmax(q kᵀ + bias);  y = A v
        const att = tf.softmax(tf.add(OPS.matmulNT(q, kc), biasT)) as tf.Tensor4D; // [cap, H, 1, W]
        return tf.reshape(OPS.matmul(att, vc), [cap, c]) as tf.Tensor2D; // [cap, C]
      };
      const x = this.model.embed(tf.tensor1d(tokens, "int32"), tf.tensor1d(positions, "int32"), OPS);
      const hf = this.model.blocks(x, attend, OPS); // [cap, C]
      return this.model.head(hf, OPS); // [cap·V]
    });
  }

  dispose(): void {
    this.slots.dispose();
  }
}
