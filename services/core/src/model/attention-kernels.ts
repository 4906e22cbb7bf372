/**
 * Fused causal self-attention for the tfjs `wasm` backend: one kernel forward and one backward per
 * layer, computed by the addon (native/blas/attention.c) straight on the q | k | v projection rows,
 * zero-copy on the wasm heap.
 *
 * Why: as tfjs ops a layer's attention is a Transpose into heads, a split, a scale, two batched
 * matmuls, a materialised causal bias added to the scores, a softmax and a Transpose back (and
 * autodiff adds the Concat, Transposes, products and softmax backward of each); the head
 * shuffles and elementwise passes cost as much as the products. The addon addresses each head
 * inside the [N, 3C] rows with sgemm's leading dimensions and masks inside the softmax.
 *
 * Registered with the OpenBLAS kernels (`setWasmMatMul("blas")`) and removed with them; where the
 * kernels are absent {@link causalAttention} returns null and the Transformer runs the same maths
 * as tfjs ops (transformer-attention.ts). Only full causal passes use it (training, scoring):
 * padding masks and the KV cache of decoding stay on the tfjs ops.
 */
import * as tf from "@tensorflow/tfjs";
import { heapF32, offsetOf, type WasmHeapBackend } from "./blas-kernels.js";
import type { BlasAddon } from "./native-blas.js";

/** Kernel names (inputs → outputs; attrs {@link AttentionAttrs}). */
export const ATTENTION = {
  /** {qkv [B*S, 3C]} → [y [B*S, C], p [B, H, S, S] (the attention weights)]. */
  forward: "RlaifCausalAttention",
  /** {dy [B*S, C], qkv [B*S, 3C], p [B, H, S, S]} → dqkv [B*S, 3C]. */
  backward: "RlaifCausalAttentionGrad",
} as const;

/** Sequences B, heads H, and the score scale (1/√D). */
export interface AttentionAttrs {
  batch: number;
  heads: number;
  scale: number;
}

/** B, S, H, D of projection rows [B*S, 3C] split into `batch` sequences of `heads` heads. */
function dims(qkv: tf.TensorInfo, a: AttentionAttrs): [number, number, number, number] {
  const [rows, width] = qkv.shape as [number, number];
  if (qkv.dtype !== "float32" || qkv.shape.length !== 2)
    throw new Error("attention: qkv must be float32 [N, 3C]");
  if (rows % a.batch !== 0 || width % (3 * a.heads) !== 0) {
    throw new Error(
      `attention: qkv [${qkv.shape}] does not split into ${a.batch} sequences of ${a.heads} heads`,
    );
  }
  return [a.batch, rows / a.batch, a.heads, width / (3 * a.heads)];
}

function kernels(blas: BlasAddon): Record<keyof typeof ATTENTION, tf.KernelFunc> {
  return {
    forward: (args) => {
      const qkv = args.inputs.qkv as tf.TensorInfo;
      const attrs = args.attrs as unknown as AttentionAttrs;
      const [b, s, h, d] = dims(qkv, attrs);
      const be = args.backend as unknown as WasmHeapBackend;
      const y = be.makeOutput([b * s, h * d], "float32");
      const p = be.makeOutput([b, h, s, s], "float32");
      const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
      const at = (t: tf.TensorInfo) => offsetOf(be, t);
      blas.attentionForward(heap, at(qkv), heap, at(y), heap, at(p), b, s, h, d, attrs.scale);
      return [y, p];
    },
    backward: (args) => {
      const { dy, qkv, p } = args.inputs as Record<string, tf.TensorInfo>;
      const [tdy, tqkv, tp] = [dy, qkv, p] as tf.TensorInfo[];
      const attrs = args.attrs as unknown as AttentionAttrs;
      const [b, s, h, d] = dims(tqkv as tf.TensorInfo, attrs);
      if (tdy?.dtype !== "float32" || tp?.dtype !== "float32")
        throw new Error("attention: dy and p must be float32");
      const be = args.backend as unknown as WasmHeapBackend;
      const dqkv = be.makeOutput([...(tqkv as tf.TensorInfo).shape], "float32");
      const heap = heapF32(be);
      const at = (t: tf.TensorInfo | undefined) => offsetOf(be, t as tf.TensorInfo);
      blas.attentionBackward(
        heap,
        at(tdy),
        heap,
        at(tqkv),
        heap,
        at(tp),
        heap,
        at(dqkv),
        b,
        s,
        h,
        d,
        attrs.scale,
      );
      return dqkv;
    },
  };
}

/** Registers the attention kernels on `wasm` from `blas` (null: removes them, so ops fall back). */
export function setAttentionKernels(blas: BlasAddon | null): void {
  const funcs = blas === null ? null : kernels(blas);
  for (const [key, kernelName] of Object.entries(ATTENTION) as [keyof typeof ATTENTION, string][]) {
    if (tf.getKernel(kernelName, "wasm") !== undefined) tf.unregisterKernel(kernelName, "wasm");
    if (funcs !== null) tf.registerKernel({ kernelName, backendName: "wasm", kernelFunc: funcs[key] });
  }
}

/**
 * softmax(q kᵀ / √D + causal mask) v per head of `batch` sequences, from projection rows
 * qkv [B*S, 3C] (q | k | v, heads of D = C/H columns) to merged output rows [B*S, C], with its
 * gradient; null when the active backend lacks the fused kernels (the caller then runs tfjs ops).
 */
export function causalAttention(qkv: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D | null {
  if (tf.getKernel(ATTENTION.forward, tf.getBackend()) === undefined) return null;
  const attrs = { batch, heads, scale: 1 / Math.sqrt(qkv.shape[1] / (3 * heads)) };
  const op = tf.customGrad((...args) => {
    const [x, save] = args as [tf.Tensor2D, tf.GradSaveFunc];
    const [y, p] = tf.engine().runKernel(ATTENTION.forward, { qkv: x }, { ...attrs }) as tf.Tensor[];
    save([x, p as tf.Tensor]);
    return {
      value: y as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, [sx, sp]: tf.Tensor[]) => [
        tf
          .engine()
          .runKernel(
            ATTENTION.backward,
            { dy, qkv: sx as tf.Tensor, p: sp as tf.Tensor },
            { ...attrs },
          ) as tf.Tensor,
      ],
    };
  });
  return op(qkv) as tf.Tensor2D;
}
