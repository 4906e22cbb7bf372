/**
 * Kernel workarounds for the tfjs `wasm` backend (4.22.0, pinned exactly in package.json).
 *
 * Measured on the project's machines, the stock wasm backend has
 * three problems that bite a transformer trained in Node:
 * - `OneHot` writes int32 bit patterns into float32 outputs, so `tf.oneHot(i, d, 1, 0, 'float32')`
 *   yields 1.4e-45 instead of 1 (silently zero losses). Replaced by a JS kernel that is correct
 *   for every dtype.
 * - `UnsortedSegmentSum` is not registered, so the gradient of `tf.gather` (embeddings, picking
 *   log-probs of chosen tokens) throws. Registered here as a JS kernel.
 * - `BatchMatMul` only takes XNNPACK's fast path for a single 2-D product without transpose
 *   flags; everything else (attention's batched products, the stock matMul gradient's
 *   transposed products) runs a naive loop at ~1 GFLOP/s, 5–10x slower. The replacement
 *   transposes explicitly, folds a shared right operand into one 2-D product, and otherwise
 *   runs each batch slice through the fast path by registering zero-copy views of the slices
 *   with the wasm runtime.
 *
 * Where the OpenBLAS addon is built, `BatchMatMul` and `_FusedMatMul` come from blas-kernels.ts
 * instead (3–10x faster again, transpose flags included), and so do column sums (`Sum` over the
 * leading axes, the bias gradients), the embeddings' row segment sums (segment-kernels.ts), the fused LayerNorm/GELU/softmax kernels of fused-kernels.ts,
 * the causal attention of attention-kernels.ts, the whole-sequence GRU/LSTM kernels of
 * recurrent-kernels.ts and the Add, Sub and Multiply of elementwise-kernels.ts;
 * `setWasmMatMul` switches between the three matmul
 * implementations, so tests can compare them in one process. The data-movement kernels that
 * copy needlessly (Slice, SplitV, Unpack, Identity, GatherV2) come from wasm-data-kernels.ts.
 *
 * These rely on wasm-backend internals (`dataIdMap`, `wasm.tfjs.registerTensor`); every kernel
 * checks that they exist and otherwise leaves the stock kernel in place.
 */
import * as tf from "@tensorflow/tfjs";
import { ATTENTION, setAttentionKernels } from "./attention-kernels.js";
import { hasHeapInternals, makeBlasBatchMatMul, makeBlasFusedMatMul, makeBlasSum } from "./blas-kernels.js";
import { setElementwiseKernels } from "./elementwise-kernels.js";
import { FUSED, setFusedKernels } from "./fused-kernels.js";
import type { BlasAddon } from "./native-blas.js";
import { RECURRENT, setRecurrentKernels } from "./recurrent-kernels.js";
import { makeBlasSegmentSum } from "./segment-kernels.js";
import { setWasmDataKernels } from "./wasm-data-kernels.js";

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The parts of tfjs-backend-wasm's `BackendWasm` these kernels use (stable within 4.22.0). */
interface WasmBackendInternals {
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object): boolean;
  wasm: {
    cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
    tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
  };
}

function internals(backend: unknown): WasmBackendInternals {
  return backend as WasmBackendInternals;
}

/** True when `backend` exposes everything the replacement kernels touch. */
function hasInternals(backend: unknown): boolean {
  const b = backend as Partial<WasmBackendInternals> | null;
  return (
    b != null &&
    typeof b.makeOutput === "function" &&
    typeof b.typedArrayFromHeap === "function" &&
    typeof b.dataIdNextNumber === "number" &&
    b.dataIdMap != null &&
    typeof b.wasm?.cwrap === "function" &&
    typeof b.wasm?.tfjs?.registerTensor === "function" &&
    typeof b.wasm?.tfjs?.disposeData === "function"
  );
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function oneHotKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = internals(backend);
  const indices = inputs.indices as tf.TensorInfo;
  const { depth, onValue, offValue, dtype } = attrs as unknown as {
    depth: number;
    onValue: number;
    offValue: number;
    dtype: tf.DataType;
  };
  const out = be.makeOutput([...indices.shape, depth], dtype);
  // Heap views only after the allocation: growing the heap detaches older views.
  const values = be.typedArrayFromHeap(out);
  const idx = be.typedArrayFromHeap(indices);
  values.fill(offValue);
  for (let i = 0; i < idx.length; i++) {
    const k = idx[i] as number;
    if (k >= 0 && k < depth) values[i * depth + k] = onValue;
  }
  return out;
}

function unsortedSegmentSumKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = internals(backend);
  const x = inputs.x as tf.TensorInfo;
  const ids = inputs.segmentIds as tf.TensorInfo;
  const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
  const inner = x.shape.slice(ids.shape.length);
  const n = size(ids.shape);
  const width = size(inner);
  const out = be.makeOutput([numSegments, ...inner], x.dtype);
  const values = be.typedArrayFromHeap(out);
  const xs = be.typedArrayFromHeap(x);
  const seg = be.typedArrayFromHeap(ids);
  values.fill(0);
  for (let i = 0; i < n; i++) {
    const s = seg[i] as number;
    if (s < 0 || s >= numSegments) continue;
    for (let j = 0; j < width; j++) (values[s * width + j] as number) += xs[i * width + j] as number;
  }
  return out;
}

/** Below this many rows per slice the per-slice XNNPACK set-up costs more than the naive loop. */
const MIN_ROWS_FOR_SLICING = 8;

type MatMulFn = (...args: unknown[]) => void;
const cwrapped = new WeakMap<object, MatMulFn>();

function wasmMatMul(be: WasmBackendInternals): MatMulFn {
  let fn = cwrapped.get(be);
  if (fn === undefined) {
    fn = be.wasm.cwrap("BatchMatMul", null, [
      "number",
      "array",
      "number",
      "number",
      "array",
      "number",
      "number",
      "number",
      "number",
    ]);
    cwrapped.set(be, fn);
  }
  return fn;
}

function makeBatchMatMulKernel(original: tf.KernelConfig): tf.KernelFunc {
  const transposeKernel = tf.getKernel("Transpose", "wasm");
  return (args: KernelArgs) => {
    const { inputs, backend, attrs } = args;
    let a = inputs.a as tf.TensorInfo;
    let b = inputs.b as tf.TensorInfo;
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (a.dtype !== "float32" || b.dtype !== "float32" || a.shape.length < 2 || b.shape.length < 2) {
      return original.kernelFunc(args);
    }
    const be = internals(backend);
    const temps: tf.TensorInfo[] = [];
    // Transposed operands go through an explicit (cheap) Transpose instead of the strided loop.
    const swapLast = (t: tf.TensorInfo): tf.TensorInfo => {
      const r = t.shape.length;
      const perm = [...Array(r).keys()];
      [perm[r - 2], perm[r - 1]] = [r - 1, r - 2];
      const out = transposeKernel.kernelFunc({ inputs: { x: t }, backend, attrs: { perm } }) as tf.TensorInfo;
      temps.push(out);
      return out;
    };
    const rowsOut = a.shape[a.shape.length - (transposeA ? 1 : 2)] as number;
    const slices = size(a.shape.slice(0, -2));
    if (b.shape.length > 2 && size(b.shape.slice(0, -2)) === slices && rowsOut < MIN_ROWS_FOR_SLICING) {
      // A few query rows per slice (decoding): the strided loop beats any transpose. It runs for
      // one slice too, so a slice's result never depends on how many slices share the call (the
      // stock kernel takes XNNPACK for a single untransposed product, whose sums round
      // differently); the batched sampler relies on that (row-decoder.ts).
      if (transposeA || transposeB || slices > 1) return original.kernelFunc(args);
      const bt = swapLast(b);
      try {
        return original.kernelFunc({ ...args, inputs: { a, b: bt }, attrs: { ...attrs, transposeB: true } });
      } finally {
        for (const t of temps) be.disposeData(t.dataId);
      }
    }
    const batched = a.shape.length > 2 && slices > 1;
    if (batched && rowsOut < MIN_ROWS_FOR_SLICING && size(b.shape.slice(0, -2)) > 1) {
      // A few query rows per slice with a broadcast operand: the strided loop, as above.
      return original.kernelFunc(args);
    }
    try {
      if (transposeA) a = swapLast(a);
      if (transposeB) b = swapLast(b);
      const plain = { ...args, inputs: { a, b }, attrs: { ...attrs, transposeA: false, transposeB: false } };
      const [m, k] = a.shape.slice(-2) as [number, number];
      const n = b.shape[b.shape.length - 1] as number;
      const batchA = size(a.shape.slice(0, -2));
      const batchB = size(b.shape.slice(0, -2));
      const batch = Math.max(batchA, batchB);
      if (batch === 1 || m * k * n === 0) return original.kernelFunc(plain);
      const outer = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
      if (batchB === 1) {
        // Shared right operand (e.g. [B, T, C] @ [C, D]): one 2-D product over all rows of `a`.
        const rowsA = { dataId: a.dataId, shape: [1, batchA * m, k], dtype: a.dtype };
        const single = { dataId: b.dataId, shape: [1, k, n], dtype: b.dtype };
        const out = original.kernelFunc({ ...plain, inputs: { a: rowsA, b: single } }) as tf.TensorInfo;
        out.shape = [...outer, m, n];
        return out;
      }
      if ((batchA !== batchB && batchA !== 1) || m < MIN_ROWS_FOR_SLICING) return original.kernelFunc(plain);
      const out = be.makeOutput([...outer, m, n], "float32");
      const offA = be.dataIdMap.get(a.dataId)?.memoryOffset as number;
      const offB = be.dataIdMap.get(b.dataId)?.memoryOffset as number;
      const offOut = be.dataIdMap.get(out.dataId)?.memoryOffset as number;
      const shapeA = new Uint8Array(new Int32Array([1, m, k]).buffer);
      const shapeB = new Uint8Array(new Int32Array([1, k, n]).buffer);
      const mm = wasmMatMul(be);
      const reg = be.wasm.tfjs;
      for (let i = 0; i < batch; i++) {
        // Zero-copy views of slice i; the wasm runtime never frees memory on disposeData.
        const ia = be.dataIdNextNumber++;
        const ib = be.dataIdNextNumber++;
        const io = be.dataIdNextNumber++;
        reg.registerTensor(ia, m * k, offA + (batchA === 1 ? 0 : i * m * k * 4));
        reg.registerTensor(ib, k * n, offB + (batchB === 1 ? 0 : i * k * n * 4));
        reg.registerTensor(io, m * n, offOut + i * m * n * 4);
        mm(ia, shapeA, 3, ib, shapeB, 3, false, false, io);
        reg.disposeData(ia);
        reg.disposeData(ib);
        reg.disposeData(io);
      }
      return out;
    } finally {
      for (const t of temps) be.disposeData(t.dataId);
    }
  };
}

/** Which kernels serve `BatchMatMul` and `_FusedMatMul` on wasm: OpenBLAS, this file's, or tfjs's own. */
export type WasmMatMul = "blas" | "wasm" | "stock";

let stock: { batch: tf.KernelConfig; fused: tf.KernelConfig; sum: tf.KernelConfig } | null = null;
let matMulKind: WasmMatMul = "stock";

function replace(kernelName: string, kernelFunc: tf.KernelFunc): void {
  if (tf.getKernel(kernelName, "wasm") !== undefined) tf.unregisterKernel(kernelName, "wasm");
  tf.registerKernel({ kernelName, backendName: "wasm", kernelFunc });
}

/**
 * Installs the replacement kernels on the already-initialised `wasm` backend: OneHot,
 * UnsortedSegmentSum, the data-movement kernels of wasm-data-kernels.ts, and the matmul kernels
 * of `setWasmMatMul` — OpenBLAS (with Sum) when `blas` is given, else this file's BatchMatMul.
 * Returns the names of the kernels it replaced (empty when the backend internals are missing,
 * and then nothing is replaced).
 */
export function registerWasmWorkarounds(blas: BlasAddon | null): string[] {
  const backend = tf.findBackend("wasm");
  if (!hasInternals(backend)) return [];
  if (stock === null) {
    stock = {
      batch: tf.getKernel("BatchMatMul", "wasm"),
      fused: tf.getKernel("_FusedMatMul", "wasm"),
      sum: tf.getKernel("Sum", "wasm"),
    };
    replace("OneHot", oneHotKernel as tf.KernelFunc);
    replace("UnsortedSegmentSum", unsortedSegmentSumKernel as tf.KernelFunc);
  }
  const data = setWasmDataKernels("views");
  const useBlas = blas !== null && hasHeapInternals(backend);
  setWasmMatMul(useBlas ? "blas" : "wasm", blas);
  const addon = useBlas
    ? [
        "_FusedMatMul",
        "Sum",
        "Add",
        "Sub",
        "Multiply",
        ...Object.values(FUSED),
        ...Object.values(ATTENTION),
        ...Object.values(RECURRENT),
      ]
    : [];
  return ["OneHot", "UnsortedSegmentSum", ...data, "BatchMatMul", ...addon];
}

/**
 * Switches the wasm matmul kernels, column sums and fused kernels (after
 * `registerWasmWorkarounds`): `blas` needs the addon; `stock` restores tfjs's own kernels, the reference the tests compare the
 * others with. Kernels are looked up per op, so the switch applies to the next op.
 */
export function setWasmMatMul(kind: WasmMatMul, blas: BlasAddon | null = null): void {
  if (stock === null) throw new Error("setWasmMatMul: the wasm backend's kernels are not registered yet");
  if (kind === "blas" && blas === null) throw new Error("setWasmMatMul: 'blas' needs the BLAS addon");
  const batch =
    kind === "blas"
      ? makeBlasBatchMatMul(blas as BlasAddon, stock.batch)
      : kind === "wasm"
        ? makeBatchMatMulKernel(stock.batch)
        : stock.batch.kernelFunc;
  replace("BatchMatMul", batch);
  replace(
    "_FusedMatMul",
    kind === "blas" ? makeBlasFusedMatMul(blas as BlasAddon, stock.fused) : stock.fused.kernelFunc,
  );
  replace("Sum", kind === "blas" ? makeBlasSum(blas as BlasAddon, stock.sum) : stock.sum.kernelFunc);
  const segmentSum = unsortedSegmentSumKernel as tf.KernelFunc;
  replace(
    "UnsortedSegmentSum",
    kind === "blas" ? makeBlasSegmentSum(blas as BlasAddon, segmentSum) : segmentSum,
  );
  setFusedKernels(kind === "blas" ? blas : null);
  setAttentionKernels(kind === "blas" ? blas : null);
  setRecurrentKernels(kind === "blas" ? blas : null);
  setElementwiseKernels(kind === "blas" ? blas : null);
  matMulKind = kind;
}

/** The wasm matmul kernels in use (`stock` before the backend is set up). */
export function wasmMatMulKind(): WasmMatMul {
  return matMulKind;
}
