/**
 * Differentiable building blocks of the transformer, with hand-written gradients.
 *
 * Why custom gradients: on the wasm backend (the default on CPU machines) the stock gradients are
 * slow in three places (measured on the project's machines): matMul's gradient uses the
 * transposeA/B flags (5–10x slower than a plain product), tanh-GELU pays for slow `tanh`/`pow`
 * kernels (~15x slower than `sigmoid`), and LayerNorm's autodiff through `moments` takes many
 * small kernels. Each op below computes the same mathematical gradient with explicit transposes,
 * a sigmoid form of GELU and the closed-form LayerNorm backward, so the model is fast on any
 * backend even without the kernel workarounds of `wasm-kernels.ts`. The `*Reference` variants
 * are the plain stock-autodiff formulas; tests check both agree to 1e-5 relative.
 *
 * All functions expect to be called inside `tf.tidy` (the model's forward is).
 */
import * as tf from "@tensorflow/tfjs";
import { causalAttention } from "./attention-kernels.js";
import {
  gelu,
  geluInference,
  geluReference,
  layerNorm,
  layerNormInference,
  layerNormReference,
} from "./norm-gelu.js";
import { wasmMatMulKind } from "./wasm-kernels.js";

export { gelu, geluReference, LN_EPS, layerNorm, layerNormReference } from "./norm-gelu.js";

/**
 * Additive attention score for masked keys (the Transformer's padding and future positions, the
 * Seq2Seq attention's padded source tokens): exp(−1e9 − max) is exactly 0 in float32, so a masked
 * key gets attention weight exactly 0.
 */
export const MASKED = -1e9;

/** Swaps the last two axes explicitly (a cheap kernel), instead of using matMul's transpose flags. */
export function swapLast<T extends tf.Tensor>(t: T): T {
  const r = t.rank;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [r - 1, r - 2];
  return tf.transpose(t, perm);
}

/** Column sums Σ_n x[n, :] of a 2-D tensor (the gradient of a broadcast bias add). */
function colSum(x: tf.Tensor2D): tf.Tensor1D {
  return tf.sum(x, 0); // [C]
}

/**
 * Whether the active matmul kernels take transpose flags at full speed: OpenBLAS under wasm and
 * native TensorFlow do; the wasm backend's own kernels (and cpu) run flagged products 5–10x slower
 * than an explicit Transpose followed by a plain product.
 */
function transposeFlagsFree(): boolean {
  const backend = tf.getBackend();
  return backend === "tensorflow" || (backend === "wasm" && wasmMatMulKind() === "blas");
}

/**
 * op(a) @ op(b), with each transpose as a flag or as an explicit Transpose, whichever is faster
 * here (exported for the hand-written backward passes of other ops, e.g. gru-layer.ts).
 */
export function product(a: tf.Tensor, b: tf.Tensor, transA: boolean, transB: boolean): tf.Tensor {
  if (transposeFlagsFree()) return tf.matMul(a, b, transA, transB);
  return tf.matMul(transA ? swapLast(a) : a, transB ? swapLast(b) : b);
}

const matmulOp = tf.customGrad((...args) => {
  const [a, b, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
  save([a, b]);
  return {
    // y = a b
    value: tf.matMul(a, b), // [..., M, N]
    gradFunc: (dy: tf.Tensor, [sa, sb]: tf.Tensor[]) => [
      // ∂L/∂a = dy bᵀ,  ∂L/∂b = aᵀ dy
      product(dy, sb as tf.Tensor, false, true), // [..., M, K]
      product(sa as tf.Tensor, dy, true, false), // [..., K, N]
    ],
  };
});

/** `a @ b` for rank-2 or equal-batch rank-3/4 operands; gradient without transpose flags. */
export function matmul<T extends tf.Tensor>(a: T, b: tf.Tensor): T {
  return matmulOp(a, b) as T;
}

const matmulNTOp = tf.customGrad((...args) => {
  const [a, b, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
  save([a, b]);
  return {
    // y = a bᵀ
    value: product(a, b, false, true), // [..., M, N]
    gradFunc: (dy: tf.Tensor, [sa, sb]: tf.Tensor[]) => [
      // ∂L/∂a = dy b,  ∂L/∂b = dyᵀ a
      tf.matMul(dy, sb as tf.Tensor), // [..., M, K]
      product(dy, sa as tf.Tensor, true, false), // [..., N, K]
    ],
  };
});

/** `a @ bᵀ` (attention scores q kᵀ with k stored [..., N, K]); gradient without transpose flags. */
export function matmulNT<T extends tf.Tensor>(a: T, b: tf.Tensor): T {
  return matmulNTOp(a, b) as T;
}

const linearOp = tf.customGrad((...args) => {
  const [x, w, b, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, w]);
  return {
    // y = x W + b, the bias added by the product itself (sgemm's beta = 1 on the OpenBLAS path),
    // not by a separate pass over [N, out]
    value: tf.fused.matMul({ a: x, b: w, bias: b }), // [N, out]
    gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => [
      // ∂L/∂x = dy Wᵀ
      product(dy, sw as tf.Tensor, false, true), // [N, in]
      // ∂L/∂W = xᵀ dy
      product(sx as tf.Tensor, dy, true, false), // [in, out]
      // ∂L/∂b = Σ_n dy
      colSum(dy as tf.Tensor2D), // [out]
    ],
  };
});

/** Affine layer `x W + b` on rows; `W` is stored [in, out] (GPT-2 "Conv1D" layout). */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return linearOp(x, w, b) as tf.Tensor2D;
}

/** Stock-autodiff `linear`, the reference for gradient tests. */
export function linearReference(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return tf.add(tf.matMul(x, w), b);
}

const embeddingOp = tf.customGrad((...args) => {
  const [table, ids, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([ids]);
  const rows = table.shape[0];
  return {
    // e_n = E[ids_n]
    value: tf.gather(table, ids), // [N, C]
    gradFunc: (dy: tf.Tensor, [sids]: tf.Tensor[]) => {
      const idx = sids as tf.Tensor1D;
      const g = dy as tf.Tensor2D;
      // ∂L/∂E[r] = Σ_{n: ids_n = r} dy_n
      const dE = hasSegmentSum()
        ? tf.unsortedSegmentSum(g, idx, rows) // [V, C]
        : tf.matMul(swapLast(tf.oneHot(idx, rows).cast("float32") as tf.Tensor2D), g); // [V, C]
      return [dE, tf.zerosLike(idx)];
    },
  };
});

/** Whether the active backend has `UnsortedSegmentSum` (stock wasm lacks it; `initBackend` adds it). */
function hasSegmentSum(): boolean {
  return tf.getKernel("UnsortedSegmentSum", tf.getBackend()) !== undefined;
}

/**
 * Row lookup `E[ids]` for int32 ids [N]. Its gradient works on every backend: a segment sum
 * where the kernel exists, else a one-hot product (built as `oneHot(i, d).cast`, which is correct
 * on wasm, unlike `oneHot(i, d, 1, 0, 'float32')`).
 */
export function embedding(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D {
  return embeddingOp(table, ids) as tf.Tensor2D;
}

/** Stock `tf.gather` lookup (its gradient needs UnsortedSegmentSum), the reference for tests. */
export function embeddingReference(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D {
  return tf.gather(table, ids);
}

/** One implementation of every layer primitive the transformer uses. */
export interface LayerOps {
  linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D;
  layerNorm(x: tf.Tensor2D, g: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D;
  gelu<T extends tf.Tensor>(x: T): T;
  embedding(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D;
  /** a @ b */
  matmul<T extends tf.Tensor>(a: T, b: tf.Tensor): T;
  /** a @ bᵀ */
  matmulNT<T extends tf.Tensor>(a: T, b: tf.Tensor): T;
  /**
   * Fused causal self-attention on q | k | v rows [B*S, 3C] → [B*S, C], or null where the
   * backend lacks it; absent: always the tfjs ops (the reference).
   */
  causalAttention?(qkv: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D | null;
}

/** Training: custom gradients (explicit transposes, sigmoid GELU, closed-form LayerNorm). */
export const TRAIN_OPS: LayerOps = { linear, layerNorm, gelu, embedding, matmul, matmulNT, causalAttention };

/** Stock autodiff (transpose flags, tanh GELU, `moments`): the reference the tests compare to. */
export const REFERENCE_OPS: LayerOps = {
  linear: linearReference,
  layerNorm: layerNormReference,
  gelu: geluReference,
  embedding: embeddingReference,
  matmul: <T extends tf.Tensor>(a: T, b: tf.Tensor) => tf.matMul(a, b) as T,
  matmulNT: <T extends tf.Tensor>(a: T, b: tf.Tensor) => tf.matMul(a, b, false, true) as T,
};

/**
 * Inference (no gradient bookkeeping, fewest kernels): the same maths as TRAIN_OPS' forward, with
 * fused matmul + bias, and `a @ bᵀ` left to the kernel (a strided loop is cheapest for one query
 * row per step while decoding). Kernel dispatch, not arithmetic, dominates a decoding step.
 */
export const INFERENCE_OPS: LayerOps = {
  linear: (x, w, b) => tf.fused.matMul({ a: x, b: w, bias: b }) as tf.Tensor2D,
  layerNorm: layerNormInference,
  gelu: geluInference,
  embedding: (table, ids) => tf.gather(table, ids),
  matmul: <T extends tf.Tensor>(a: T, b: tf.Tensor) => tf.matMul(a, b) as T,
  matmulNT: <T extends tf.Tensor>(a: T, b: tf.Tensor) => tf.matMul(a, b, false, true) as T,
  causalAttention,
};
