/**
 * Fused LayerNorm, GELU, softmax, Adam and GRU-backward kernels for the tfjs `wasm` backend,
 * computed by the project's addon (native/blas/fused.c, gelu.c, softmax.c, decoder-attention.c) in
 * one pass each, zero-copy on the wasm heap.
 *
 * Why: on wasm each tfjs elementwise op is a pass over memory plus a dispatch, and LayerNorm
 * (~20 ops forward and backward) and GELU (~14) were a third of a Transformer learner step.
 * These are custom kernels (names in {@link FUSED}) that layers.ts's custom-gradient ops call
 * when the active backend has them (`hasFusedKernel`) and replace by the same maths in tfjs ops
 * otherwise. GELU forward and backward are one kernel each (σ recomputed, not stored).
 * Adam's update (learn/adam.ts) was ~13 kernels per parameter tensor, over half of a step's
 * kernel calls. The Seq2Seq decoder's attention (scores, bias, softmax, context: four kernels and
 * two sgemm calls per row) is one kernel when sampling and scoring, which need no gradient, and so
 * is the tanh of their inference passes (four elementwise kernels in tfjs ops).
 * Registered with the OpenBLAS kernels (`setWasmMatMul("blas")`) and removed with them, so the
 * tests compare both paths in one process. Float32 only (everything the models feed them).
 */
import * as tf from "@tensorflow/tfjs";
import { heapF32, offsetOf, type WasmHeapBackend } from "./blas-kernels.js";
import type { BlasAddon } from "./native-blas.js";

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Kernel names (inputs → outputs). */
export const FUSED = {
  /** {x} → gelu(x) = x σ(u), u = x (2c + 2ca x²) (tanh-GELU's sigmoid form). */
  gelu: "RlaifGelu",
  /** {dy, x} → dx = dy · d gelu/dx (σ(u) recomputed from x). */
  geluGrad: "RlaifGeluGrad",
  /** {z [N, V]} → [p = softmax(z) [N, V], lse = log Σ_v exp z_v [N]] (native/blas/softmax.c). */
  softmaxLse: "RlaifSoftmaxLse",
  /** {x [N, C], gamma [C], beta [C]}, attr epsilon → [y, x̂ (both [N, C]), 1/σ [N, 1]]. */
  layerNorm: "RlaifLayerNorm",
  /** {dy, xhat [N, C], rstd [N, 1], gamma [C]} → [dx [N, C], dγ [C], dβ [C]]. */
  layerNormGrad: "RlaifLayerNormGrad",
  /** {param, grad, m, v}, attrs {@link AdamAttrs} → [θ', m', v'] (one Adam(W) update). */
  adam: "RlaifAdam",
  /** {hp, r, z, n, uN (each [N, H]), mask? [N, 1]} → [Pᵃ, Pᵘ (both [N, 3H]), z̃ [N, H]] (gru-layer.ts). */
  gruFactors: "RlaifGruFactors",
  /**
   * {q [B, J, H], keys [B, S, H], values [B, S, H], bias [B, 1, S]} → ctx [B, J, H] =
   * softmax(q keysᵀ + bias) values per row (the Seq2Seq decoder's attention, decoder-attention.c).
   */
  attend: "RlaifAttend",
  /** {x} → tanh x = 2σ(2x) − 1 (decoder-attention.c), in one pass instead of four tfjs kernels. */
  tanh: "RlaifTanh",
} as const;

/** The constants of one Adam(W) update, as learn/adam.ts computes them (in double). */
export type AdamAttrs = {
  beta1: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  epsilon: number;
  /** α / (1 − β1^t) */
  step: number;
  /** √(1 − β2^t) */
  sqrtBc2: number;
  /** 1 − α·λ with decoupled weight decay, else 1 */
  decay: number;
  /** The global-norm clip's factor, applied to the gradient first (1: not clipped) */
  gradScale: number;
};

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function float32(name: string, inputs: tf.TensorInfo[]): void {
  for (const t of inputs)
    if (t.dtype !== "float32") throw new Error(`${name}: expected float32, got ${t.dtype}`);
}

/** Rows and columns of a tensor whose last axis is the normalised one. */
function rowsCols(x: tf.TensorInfo): [number, number] {
  const cols = x.shape.at(-1) as number;
  return [size(x.shape) / cols, cols];
}

function adamKernel(blas: BlasAddon): tf.KernelFunc {
  return (args) => {
    const { param, grad, m, v } = args.inputs as Record<string, tf.TensorInfo>;
    const ins = [param, grad, m, v] as tf.TensorInfo[];
    float32(FUSED.adam, ins);
    const a = args.attrs as unknown as AdamAttrs;
    const be = args.backend as unknown as WasmHeapBackend;
    const shape = [...(param as tf.TensorInfo).shape];
    const outs = [
      be.makeOutput(shape, "float32"),
      be.makeOutput(shape, "float32"),
      be.makeOutput(shape, "float32"),
    ];
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    const [o0, o1, o2, o3, o4, o5, o6] = [...ins, ...outs].map((t) => offsetOf(be, t));
    blas.adam(
      ...[heap, o0, heap, o1, heap, o2, heap, o3, heap, o4, heap, o5, heap, o6],
      size(shape),
      a.beta1,
      a.oneMinusBeta1,
      a.beta2,
      a.oneMinusBeta2,
      a.epsilon,
      a.step,
      a.sqrtBc2,
      a.decay,
      a.gradScale,
    );
    return outs;
  };
}

function gruFactorsKernel(blas: BlasAddon): tf.KernelFunc {
  return (args) => {
    const { hp, r, z, n, uN, mask } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const ins = [hp, r, z, n, uN] as tf.TensorInfo[];
    float32(FUSED.gruFactors, mask === undefined ? ins : [...ins, mask]);
    const [rows, h] = (hp as tf.TensorInfo).shape as [number, number];
    const be = args.backend as unknown as WasmHeapBackend;
    const outs = [
      be.makeOutput([rows, 3 * h], "float32"),
      be.makeOutput([rows, 3 * h], "float32"),
      be.makeOutput([rows, h], "float32"),
    ];
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    const [o0, o1, o2, o3, o4, pa, pu, zc] = [...ins, ...outs].map((t) => offsetOf(be, t));
    const m = mask === undefined ? [null, 0] : [heap, offsetOf(be, mask)];
    blas.gruFactors(
      ...[heap, o0, heap, o1, heap, o2, heap, o3, heap, o4],
      ...(m as [Float32Array | null, number]),
      ...[heap, pa, heap, pu, heap, zc],
      rows,
      h,
    );
    return outs;
  };
}

function attendKernel(blas: BlasAddon): tf.KernelFunc {
  return (args) => {
    const { q, keys, values, bias } = args.inputs as Record<string, tf.TensorInfo>;
    const ins = [q, keys, values, bias] as tf.TensorInfo[];
    float32(FUSED.attend, ins);
    const [b, j, h] = (q as tf.TensorInfo).shape as [number, number, number];
    const s = (keys as tf.TensorInfo).shape[1] as number;
    const be = args.backend as unknown as WasmHeapBackend;
    const ctx = be.makeOutput([b, j, h], "float32");
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    const [oq, ok, ov, ob, oc] = [...ins, ctx].map((t) => offsetOf(be, t)) as number[];
    blas.attend(heap, oq as number, ok as number, ov as number, ob as number, oc as number, b, j, s, h);
    return ctx;
  };
}

function kernels(blas: BlasAddon): Record<keyof typeof FUSED, tf.KernelFunc> {
  const heapOf = (args: KernelArgs) => args.backend as unknown as WasmHeapBackend;
  return {
    gelu: (args) => {
      const x = args.inputs.x as tf.TensorInfo;
      float32(FUSED.gelu, [x]);
      const be = heapOf(args);
      const y = be.makeOutput([...x.shape], "float32");
      const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
      blas.geluForward(heap, offsetOf(be, x), heap, offsetOf(be, y), size(x.shape));
      return y;
    },
    geluGrad: (args) => {
      const { dy, x } = args.inputs as Record<string, tf.TensorInfo>;
      float32(FUSED.geluGrad, [dy as tf.TensorInfo, x as tf.TensorInfo]);
      const be = heapOf(args);
      const dx = be.makeOutput([...(x as tf.TensorInfo).shape], "float32");
      const heap = heapF32(be);
      const o = (t: tf.TensorInfo | undefined) => offsetOf(be, t as tf.TensorInfo);
      blas.geluBackward(heap, o(dy), heap, o(x), heap, o(dx), size(dx.shape));
      return dx;
    },
    softmaxLse: (args) => {
      const z = args.inputs.z as tf.TensorInfo;
      float32(FUSED.softmaxLse, [z]);
      const [rows, cols] = rowsCols(z);
      const be = heapOf(args);
      const [p, lse] = [
        be.makeOutput([...z.shape], "float32"),
        be.makeOutput(z.shape.slice(0, -1), "float32"),
      ];
      const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
      blas.softmaxLse(heap, offsetOf(be, z), heap, offsetOf(be, p), heap, offsetOf(be, lse), rows, cols);
      return [p, lse];
    },
    layerNorm: (args) => {
      const { x, gamma, beta } = args.inputs as Record<string, tf.TensorInfo>;
      const [tx, tg, tb] = [x, gamma, beta] as tf.TensorInfo[];
      float32(FUSED.layerNorm, [tx, tg, tb] as tf.TensorInfo[]);
      const eps = (args.attrs as unknown as { epsilon: number }).epsilon;
      const [rows, cols] = rowsCols(tx as tf.TensorInfo);
      const be = heapOf(args);
      const shape = [...(tx as tf.TensorInfo).shape];
      const [y, xhat, rstd] = [
        be.makeOutput(shape, "float32"),
        be.makeOutput(shape, "float32"),
        be.makeOutput([...shape.slice(0, -1), 1], "float32"),
      ];
      const heap = heapF32(be);
      const o = (t: tf.TensorInfo | undefined) => offsetOf(be, t as tf.TensorInfo);
      blas.layerNorm(
        heap,
        o(tx),
        heap,
        o(tg),
        heap,
        o(tb),
        heap,
        o(y),
        heap,
        o(xhat),
        heap,
        o(rstd),
        rows,
        cols,
        eps,
      );
      return [y, xhat, rstd];
    },
    layerNormGrad: (args) => {
      const { dy, xhat, rstd, gamma } = args.inputs as Record<string, tf.TensorInfo>;
      const ins = [dy, xhat, rstd, gamma] as tf.TensorInfo[];
      float32(FUSED.layerNormGrad, ins);
      const [rows, cols] = rowsCols(xhat as tf.TensorInfo);
      const be = heapOf(args);
      const [dx, dg, db] = [
        be.makeOutput([...(xhat as tf.TensorInfo).shape], "float32"),
        be.makeOutput([cols], "float32"),
        be.makeOutput([cols], "float32"),
      ];
      const heap = heapF32(be);
      const o = (t: tf.TensorInfo | undefined) => offsetOf(be, t as tf.TensorInfo);
      blas.layerNormGrad(
        heap,
        o(dy),
        heap,
        o(xhat),
        heap,
        o(rstd),
        heap,
        o(gamma),
        heap,
        o(dx),
        heap,
        o(dg),
        heap,
        o(db),
        rows,
        cols,
      );
      return [dx, dg, db];
    },
    adam: adamKernel(blas),
    gruFactors: gruFactorsKernel(blas),
    attend: attendKernel(blas),
    tanh: (args) => {
      const x = args.inputs.x as tf.TensorInfo;
      float32(FUSED.tanh, [x]);
      const be = heapOf(args);
      const y = be.makeOutput([...x.shape], "float32");
      const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
      blas.tanh(heap, offsetOf(be, x), offsetOf(be, y), size(x.shape));
      return y;
    },
  };
}

/** Registers the fused kernels on `wasm` from `blas` (null: removes them, so ops fall back). */
export function setFusedKernels(blas: BlasAddon | null): void {
  const funcs = blas === null ? null : kernels(blas);
  for (const [key, kernelName] of Object.entries(FUSED) as [keyof typeof FUSED, string][]) {
    if (tf.getKernel(kernelName, "wasm") !== undefined) tf.unregisterKernel(kernelName, "wasm");
    if (funcs !== null) tf.registerKernel({ kernelName, backendName: "wasm", kernelFunc: funcs[key] });
  }
}

/** Whether the active backend has fused kernel `name` (else callers compute the same in tfjs ops). */
export function hasFusedKernel(name: (typeof FUSED)[keyof typeof FUSED]): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** Runs fused kernel `name` (check {@link hasFusedKernel} first); one output or several. */
export function runFused<T extends tf.Tensor | tf.Tensor[]>(
  name: (typeof FUSED)[keyof typeof FUSED],
  inputs: tf.NamedTensorMap,
  attrs: Record<string, number> = {},
): T {
  return tf.engine().runKernel(name, inputs, attrs) as T;
}
