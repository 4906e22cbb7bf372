/**
 * The Llama family's row decoder: the Transformer's scheme (transformer-decoder.ts) over kv heads.
 * Keys are cached after RoPE at their absolute position, so a step rotates only its new token's
 * query and key; a step attends over all W = contextLength columns with −1e9 past its position
 * (a fixed width keeps each row bit-identical alone or batched, see row-decoder.ts).
 *
 * Prefill: the distinct prompts of one width bucket, right-padded (the causal mask keeps padding
 * out of every real position), in one pass; only the last real position goes through the head.
 */
import * as tf from "@tensorflow/tfjs";
import type { HfLlamaLM, LlamaAttend } from "./hf-llama.js";
import { applyRope, groupedAttention, ropeTables, toHeads } from "./hf-llama-attention.js";
import { KvSlots, stepBias } from "./kv-slots.js";
import * as L from "./layers.js";
import { type RowDecoder, readPass, widthBucket } from "./row-decoder.js";
import { attentionBias, mergeHeads } from "./transformer-attention.js";

const OPS = L.INFERENCE_OPS;

/** Slots of a Llama-family model's decoding state (see the module doc). */
export class HfLlamaDecoder implements RowDecoder {
  private readonly slots: KvSlots;

  constructor(
    private readonly model: HfLlamaLM,
    capacity: number,
  ) {
    const { nLayers, nKvHeads, contextLength, headDim } = model.config;
    this.slots = new KvSlots(nLayers, nKvHeads, contextLength, headDim, capacity);
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
    const { nHeads: h, nKvHeads: kv, headDim: d, contextLength, ropeTheta } = this.model.config;
    const n = prompts.length;
    const width = widthBucket(Math.max(...prompts.map((p) => p.length)), contextLength);
    const tok = new Int32Array(n * width);
    const pos = Int32Array.from({ length: n * width }, (_, i) => i % width);
    prompts.forEach((p, r) => {
      tok.set(p, r * width);
    });
    return readPass(() => {
      const bias = attentionBias(n, h, width, 0, null); // [n, H, W', W'] causal
      const { cos, sin } = ropeTables(pos, n, width, d, ropeTheta);
      const attend: LlamaAttend = (i, q2, k2, v2) => {
        const q = tf.mul(applyRope(toHeads(q2, n, width, h, d), cos, sin), 1 / Math.sqrt(d)) as tf.Tensor4D;
        const k = applyRope(toHeads(k2, n, width, kv, d), cos, sin); // [n, KV, W', D]
        const v = toHeads(v2, n, width, kv, d);
        this.slots.copyPrompts(i, k, v, width, slots);
        return mergeHeads(groupedAttention(q, k, v, bias, OPS), n, width, h * d); // [n·W', H·D]
      };
      const hf = this.model.blocks(this.model.embed(tf.tensor1d(tok, "int32"), OPS), attend, OPS);
      const last = tf.tensor1d(
        prompts.map((p, r) => r * width + p.length - 1),
        "int32",
      );
      return this.model.head(tf.gather(hf, last), OPS); // [n·V]
    });
  }

  step(tokens: Int32Array, positions: Int32Array): Float32Array {
    const { nHeads: h, nKvHeads: kv, headDim: d, contextLength: w, ropeTheta } = this.model.config;
    const cap = tokens.length;
    const bias = stepBias(positions, h, w);
    return readPass(() => {
      const biasT = tf.tensor4d(bias, [cap, h, 1, w]);
      const { cos, sin } = ropeTables(positions, cap, 1, d, ropeTheta); // [cap, 1, 1, D]
      const attend: LlamaAttend = (i, q2, k2, v2) => {
        const q = tf.mul(applyRope(toHeads(q2, cap, 1, h, d), cos, sin), 1 / Math.sqrt(d)) as tf.Tensor4D;
        const k = applyRope(toHeads(k2, cap, 1, kv, d), cos, sin); // [cap, KV, 1, D]
        this.slots.writeColumns(i, tf.reshape(k, [cap, kv * d]), v2, positions);
        const cached = this.slots.tensors(i); // [cap, KV, W, D] each
        return tf.reshape(groupedAttention(q, cached.k, cached.v, biasT, OPS), [cap, h * d]);
      };
      const hf = this.model.blocks(this.model.embed(tf.tensor1d(tokens, "int32"), OPS), attend, OPS);
      return this.model.head(hf, OPS); // [cap·V]
    });
  }

  dispose(): void {
    this.slots.dispose();
  }
}
