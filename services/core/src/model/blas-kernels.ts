/**
 * `BatchMatMul` and `_FusedMatMul` for the tfjs `wasm` backend, computed by OpenBLAS sgemm
 * through the project's addon (native-blas.ts), zero-copy on the wasm heap.
 *
 * Why: the wasm backend's own matmul is 3–10x slower than OpenBLAS at the model's shapes, and
 * matmul is three quarters of a learner step. sgemm's own transpose flags and batch strides make
 * every product (transposed gradients, attention's batched products) run at BLAS speed, so no
 * explicit transposes are needed.
 *
 * Batch dimensions broadcast as tfjs's `matMul` defines them (numpy rules on all but the last two
 * axes). Broadcasting is expressed as strides (0 for a broadcast operand), adjacent batch axes
 * are merged where their strides allow, and a right operand shared by every batch with an
 * untransposed left operand becomes one tall 2-D product (the linear layers on [B, T, C]).
 *
 * Relies on wasm-backend internals of tfjs 4.22.0 (pinned exactly): `dataIdMap(...).memoryOffset`
 * (byte offset of a tensor on the heap), `makeOutput`, and `wasm.HEAPU8`. The heap view is taken
 * only after the output is allocated, because an allocation can grow the heap and detach it.
 */
import * as tf from "@tensorflow/tfjs";
import type { BlasAddon } from "./native-blas.js";

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The parts of tfjs-backend-wasm's `BackendWasm` these kernels (and fused-kernels.ts) use. */
export interface WasmHeapBackend {
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: object): boolean;
  wasm: { HEAPU8: Uint8Array };
}

/** Rows of every sgemm call against a shared weight matrix under `batchInvariant` by default. */
export const INVARIANT_ROWS = 16;

/** Rows per call inside the innermost `batchInvariant` (0: outside, whole calls). */
let invariantRows = 0;

/**
 * Runs `fn` with every product of rows against one weight matrix (a 2-D right operand, or a
 * `_FusedMatMul`: the linear layers and heads) computed in sgemm calls of exactly `rows` rows
 * (INVARIANT_ROWS unless given; a caller keeps one value per kind of pass), the last one
 * zero-padded. Why:
 * OpenBLAS chooses its kernel and K blocking by the call's size, so a row's result otherwise
 * depends on how many rows share the call (measured with OpenBLAS 0.3.21 on SkylakeX kernels: a
 * row of [M, 512] @ [512, 128] changes bits from M = 16 on, of [M, 128] @ [128, 258] from M = 4).
 * The batched sampler and scoring run their passes under it, so a row's tokens and log-probs do
 * not depend on the rows batched with it; training keeps whole calls. Per-slice batched products
 * (attention) need nothing: each slice is its own call of a shape the row determines. Why 16 by
 * default: the SkylakeX kernels' row tile, so a call is whole tiles; 64-row calls made an 8-row
 * decoding step ~2x slower (padding), 16-row ones cost nothing measurable on 8- or 64-row steps.
 */
export function batchInvariant<T>(fn: () => T, rows = INVARIANT_ROWS): T {
  const outer = invariantRows;
  invariantRows = rows;
  try {
    return fn();
  } finally {
    invariantRows = outer;
  }
}

/**
 * Rows per sgemm call that `batchInvariant` asks for here (0: whole calls), for kernels that run
 * their own products against a weight matrix (recurrent-kernels.ts's per-step h W_hh).
 */
export function invariantRowCount(): number {
  return invariantRows;
}

/** True when `backend` exposes what the BLAS kernels touch. */
export function hasHeapInternals(backend: unknown): boolean {
  const b = backend as Partial<WasmHeapBackend> | null;
  return (
    b != null &&
    typeof b.makeOutput === "function" &&
    typeof b.dataIdMap?.get === "function" &&
    b.wasm?.HEAPU8 instanceof Uint8Array
  );
}

/**
 * How one batched product maps onto sgemm calls: `calls` batched sgemm calls, each of `count`
 * products `stride*` elements apart, starting at the element offsets in `starts` ([a, b, c]
 * relative to each tensor). `m` can exceed the product's rows when a shared right operand folds
 * the batch into one tall product.
 */
export interface GemmPlan {
  outShape: number[];
  m: number;
  starts: [number, number, number][];
  count: number;
  strides: [number, number, number];
}

const prod = (xs: readonly number[]): number => xs.reduce((p, x) => p * x, 1);

/**
 * Plans `op(a) @ op(b)` for batch shapes `batchA`, `batchB` (broadcast like tfjs; throws on
 * incompatible shapes) and per-matrix sizes m×k, k×n. Pure arithmetic, so it is unit-testable.
 */
export function planGemm(
  batchA: readonly number[],
  batchB: readonly number[],
  m: number,
  n: number,
  k: number,
  transA: boolean,
): GemmPlan {
  const outer = tf.backend_util.assertAndGetBroadcastShape([...batchA], [...batchB]);
  const outShape = [...outer, m, n];
  const r = outer.length;
  const padA = [...Array(r - batchA.length).fill(1), ...batchA] as number[];
  const padB = [...Array(r - batchB.length).fill(1), ...batchB] as number[];
  // Per batch axis: size and element strides of a, b, c (0 where an operand broadcasts).
  const axes: { size: number; s: [number, number, number] }[] = [];
  for (let d = 0; d < r; d++) {
    const size = outer[d] as number;
    if (size === 1) continue;
    const sa = padA[d] === 1 ? 0 : prod(padA.slice(d + 1)) * m * k;
    const sb = padB[d] === 1 ? 0 : prod(padB.slice(d + 1)) * k * n;
    const sc = prod(outer.slice(d + 1)) * m * n;
    const last = axes.at(-1);
    // Merge with the previous axis when one stride steps through both.
    if (last?.s.every((s, i) => s === [sa, sb, sc][i] * size)) {
      last.size *= size;
      last.s = [sa, sb, sc];
    } else {
      axes.push({ size, s: [sa, sb, sc] });
    }
  }
  const inner = axes.pop() ?? { size: 1, s: [0, 0, 0] as [number, number, number] };
  if (axes.length === 0 && inner.s[1] === 0 && !transA && inner.s[0] === m * k) {
    // Shared right operand, contiguous untransposed left: one [count·m, k] @ [k, n] product.
    return { outShape, m: m * inner.size, starts: [[0, 0, 0]], count: 1, strides: [0, 0, 0] };
  }
  let starts: [number, number, number][] = [[0, 0, 0]];
  for (const axis of axes) {
    starts = starts.flatMap(([a, b, c]) =>
      Array.from({ length: axis.size }, (_, i): [number, number, number] => [
        a + i * axis.s[0],
        b + i * axis.s[1],
        c + i * axis.s[2],
      ]),
    );
  }
  return { outShape, m, starts, count: inner.size, strides: inner.s };
}

let heapBuffer: ArrayBufferLike | null = null;
let heapView: Float32Array<ArrayBufferLike> = new Float32Array(0);

/** A Float32Array over the whole wasm heap, renewed when the heap has grown (a new buffer). */
export function heapF32(be: WasmHeapBackend): Float32Array<ArrayBufferLike> {
  const buffer = be.wasm.HEAPU8.buffer;
  if (buffer !== heapBuffer) {
    heapBuffer = buffer;
    heapView = new Float32Array(buffer);
  }
  return heapView;
}

/** Element offset of a float32 tensor on the wasm heap. */
export function offsetOf(be: WasmHeapBackend, t: tf.TensorInfo): number {
  return (be.dataIdMap.get(t.dataId)?.memoryOffset ?? 0) / 4;
}

/**
 * `op(a) @ op(b) (+ bias)` into a new output tensor; bias is [n]. `linear`: the call is a
 * `_FusedMatMul`, i.e. a linear layer's rows against its weight (tfjs passes them as [1, M, K]).
 */
function gemm(
  blas: BlasAddon,
  be: WasmHeapBackend,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transA: boolean,
  transB: boolean,
  bias: tf.TensorInfo | null,
  linear = false,
): tf.TensorInfo {
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = a.shape[transA ? ra - 1 : ra - 2] as number;
  const k = a.shape[transA ? ra - 2 : ra - 1] as number;
  const kb = b.shape[transB ? rb - 1 : rb - 2] as number;
  const n = b.shape[transB ? rb - 2 : rb - 1] as number;
  if (k !== kb) {
    throw new Error(
      `Error in matMul: inner shapes (${k}) and (${kb}) of Tensors with shapes ${a.shape} and ` +
        `${b.shape} and transposeA=${transA} and transposeB=${transB} must match.`,
    );
  }
  const plan = planGemm(a.shape.slice(0, -2), b.shape.slice(0, -2), m, n, k, transA);
  const out = be.makeOutput(plan.outShape, "float32");
  if (prod(plan.outShape) === 0) return out;
  const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
  const [oa, ob, oc] = [offsetOf(be, a), offsetOf(be, b), offsetOf(be, out)];
  let beta = 0;
  if (bias !== null) {
    const values = heap.subarray(offsetOf(be, bias), offsetOf(be, bias) + prod(bias.shape));
    const c = heap.subarray(oc, oc + prod(plan.outShape));
    for (let row = 0; row < c.length; row += n) c.set(values, row);
    beta = 1;
  }
  const weight = linear || b.shape.length === 2; // rows against one weight matrix
  if (invariantRows > 0 && weight && !transA && plan.count === 1 && plan.starts.length === 1) {
    fixedRowGemm(blas, be, { a: oa, b: ob, c: oc }, plan.m, n, k, transB, bias, beta, invariantRows);
    return out;
  }
  const [sa, sb, sc] = plan.strides;
  for (const [da, db, dc] of plan.starts) {
    blas.sgemm(
      transA,
      transB,
      plan.m,
      n,
      k,
      1,
      heap,
      oa + da,
      sa,
      heap,
      ob + db,
      sb,
      beta,
      heap,
      oc + dc,
      sc,
      plan.count,
    );
  }
  return out;
}

/**
 * `C = A @ op(B) + beta·C` for row-major A [m, k] at element offsets `at`, in calls of
 * `rows` rows; the last partial block goes through zero-padded scratch tensors.
 */
function fixedRowGemm(
  blas: BlasAddon,
  be: WasmHeapBackend,
  at: { a: number; b: number; c: number },
  m: number,
  n: number,
  k: number,
  transB: boolean,
  bias: tf.TensorInfo | null,
  beta: number,
  rows: number,
): void {
  const full = m - (m % rows);
  for (let r = 0; r < full; r += rows) {
    const heap = heapF32(be);
    blas.sgemm(
      false,
      transB,
      rows,
      n,
      k,
      1,
      heap,
      at.a + r * k,
      0,
      heap,
      at.b,
      0,
      beta,
      heap,
      at.c + r * n,
      0,
      1,
    );
  }
  const tail = m - full;
  if (tail === 0) return;
  const sa = be.makeOutput([rows, k], "float32");
  const sc = be.makeOutput([rows, n], "float32");
  try {
    const heap = heapF32(be); // after the allocations
    const [oa, oc] = [offsetOf(be, sa), offsetOf(be, sc)];
    heap.fill(0, oa, oa + rows * k);
    heap.copyWithin(oa, at.a + full * k, at.a + m * k);
    // C's tail rows already hold the bias (beta = 1) or are overwritten (beta = 0)
    heap.fill(0, oc, oc + rows * n);
    if (bias !== null) heap.copyWithin(oc, at.c + full * n, at.c + m * n);
    blas.sgemm(false, transB, rows, n, k, 1, heap, oa, 0, heap, at.b, 0, beta, heap, oc, 0, 1);
    heap.copyWithin(at.c + full * n, oc, oc + tail * n);
  } finally {
    be.disposeData(sa.dataId);
    be.disposeData(sc.dataId);
  }
}

/** A `BatchMatMul` kernel over sgemm; non-float32 inputs go to `original` (which rejects them). */
export function makeBlasBatchMatMul(blas: BlasAddon, original: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const a = args.inputs.a as tf.TensorInfo;
    const b = args.inputs.b as tf.TensorInfo;
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (a.dtype !== "float32" || b.dtype !== "float32") return original.kernelFunc(args);
    return gemm(blas, args.backend as unknown as WasmHeapBackend, a, b, transposeA, transposeB, null);
  };
}

/**
 * A `_FusedMatMul` kernel (tf.fused.matMul: the inference path's linear layers) over sgemm for a
 * linear activation and no bias or a bias of [n] (written into the output, then sgemm adds the
 * product with beta = 1). Other activations, biases and PReLU weights go to `original`.
 */
export function makeBlasFusedMatMul(blas: BlasAddon, original: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const { transposeA, transposeB, activation } = args.attrs as unknown as {
      transposeA: boolean;
      transposeB: boolean;
      activation: string;
    };
    const ta = a as tf.TensorInfo;
    const tb = b as tf.TensorInfo;
    const n = tb.shape[transposeB ? tb.shape.length - 2 : tb.shape.length - 1] as number;
    const biasOk = bias == null || (bias.shape.length === 1 && bias.shape[0] === n);
    const plain = activation === "linear" && preluActivationWeights == null && biasOk;
    if (!plain || ta.dtype !== "float32" || tb.dtype !== "float32" || bias?.dtype === "int32") {
      return original.kernelFunc(args);
    }
    return gemm(
      blas,
      args.backend as unknown as WasmHeapBackend,
      ta,
      tb,
      transposeA,
      transposeB,
      bias ?? null,
      true,
    );
  };
}

/** A row of ones for column sums, grown on demand (it lives outside the wasm heap). */
let ones = new Float32Array(0);

/**
 * A `Sum` kernel that reduces the leading axes of a float32 tensor (the bias and LayerNorm-gain
 * gradients: Σ_n dy[n, :] over [N, C]) as one product ones[1, N] · x[N, C] on sgemm. Why: tfjs's
 * wasm Sum transposes first and then sums rows, ~7x slower than the product at [2816, 512]. Every
 * other reduction (inner axes, int32, keepDims over other axes) goes to `original`.
 */
export function makeBlasSum(blas: BlasAddon, original: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    // Only a prefix 0..r−1 of the axes, leaving at least one: x is then a contiguous [N, C].
    const leading = axes.length > 0 && axes.length < rank && axes.every((d, i) => d === i);
    if (x.dtype !== "float32" || !leading) return original.kernelFunc(args);
    const n = prod(x.shape.slice(0, axes.length));
    const c = prod(x.shape.slice(axes.length));
    const kept = x.shape.slice(axes.length);
    const be = args.backend as unknown as WasmHeapBackend;
    const out = be.makeOutput(keepDims ? [...axes.map(() => 1), ...kept] : kept, "float32");
    if (c === 0) return out;
    if (ones.length < n) ones = new Float32Array(n).fill(1);
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    // Σ_n x[n, :] = ones[1, N] · x[N, C]
    blas.sgemm(
      false,
      false,
      1,
      c,
      n,
      1,
      ones,
      0,
      0,
      heap,
      offsetOf(be, x),
      0,
      0,
      heap,
      offsetOf(be, out),
      0,
      1,
    );
    return out;
  };
}
