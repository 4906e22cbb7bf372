/**
 * Data-movement kernels for the tfjs `wasm` backend (4.22.0, pinned exactly) that read their
 * inputs in place on the wasm heap instead of copying them first.
 *
 * Why (measured on the project's machines, one learner step):
 * - tfjs's wasm `Slice` starts with `readSync(x)`, a copy of the *whole* input, for every slice.
 *   `SplitV` and `Unpack` are built from it, so splitting [N, 3C] into q, k, v copies the input
 *   three times (~2.5 ms), and the backward pass of the GRU's time-axis stack (an `Unpack` into
 *   T slices) copies it T times (~100 ms for T = 44). Here every slice copies only its own rows.
 * - `Identity` copies its input, and tfjs's autodiff clones (Identity) every tensor it saves for
 *   the backward pass — ~200 copies per Transformer step. Tensors are immutable in tfjs, so the
 *   clone can share the buffer under a reference count, as tfjs's cpu backend and wasm's own
 *   `Reshape` do.
 * - `GatherV2` (embedding lookups, a gather of rows) runs a per-element loop in wasm: ~10 ms for
 *   2,816 rows of 128 floats; row copies take a fraction of a millisecond.
 *
 * Each kernel handles the dtypes and attributes it can (float32, int32, bool; GatherV2 without
 * batch dims) and hands everything else to the stock kernel. `setWasmDataKernels` switches
 * between these and the stock ones, so tests and benches can compare both in one process.
 */
import * as tf from "@tensorflow/tfjs";

type KernelArgs = Parameters<tf.KernelFunc>[0];
type Heap = Float32Array | Int32Array | Uint8Array;

/** The parts of tfjs-backend-wasm's `BackendWasm` these kernels use. */
interface WasmDataBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Heap;
  incRef(dataId: object): void;
}

const NAMES = ["Identity", "Slice", "SplitV", "Unpack", "GatherV2"] as const;
type DataKernel = (typeof NAMES)[number];

/** Whether `backend` has what these kernels touch. */
function hasDataInternals(backend: unknown): boolean {
  const b = backend as Partial<WasmDataBackend> | null;
  return (
    b != null &&
    typeof b.makeOutput === "function" &&
    typeof b.typedArrayFromHeap === "function" &&
    typeof b.incRef === "function"
  );
}

const plainDtype = (dtype: tf.DataType): boolean =>
  dtype === "float32" || dtype === "int32" || dtype === "bool";
const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * Copies x[begin : begin + extent] into a new tensor. Trailing axes taken whole are merged with
 * the last partial one, so each copy is one contiguous run: a row block of a 2-D tensor is one
 * copy per row, a slice along axis 0 is a single copy.
 */
function sliceOnHeap(
  be: WasmDataBackend,
  x: tf.TensorInfo,
  begin: number[],
  extent: number[],
): tf.TensorInfo {
  const out = be.makeOutput(extent, x.dtype);
  const total = size(extent);
  if (total === 0) return out;
  // Heap views only after the allocation: growing the heap detaches older views.
  const src = be.typedArrayFromHeap(x);
  const dst = be.typedArrayFromHeap(out);
  const rank = x.shape.length;
  const strides = tf.util.computeStrides(x.shape); // [rank − 1]
  const stride = (d: number): number => (d === rank - 1 ? 1 : (strides[d] as number));
  // Axis k: every axis after it is taken whole, so a run covers extent[k] · stride(k) elements.
  let k = rank - 1;
  while (k > 0 && extent[k] === x.shape[k]) k--;
  const run = (extent[k] as number) * stride(k);
  let base = 0;
  for (let d = 0; d <= k; d++) base += (begin[d] as number) * stride(d);
  const idx = new Array<number>(k).fill(0); // odometer over the axes before k
  for (let o = 0; o < total; o += run) {
    let from = base;
    for (let d = 0; d < k; d++) from += (idx[d] as number) * stride(d);
    dst.set(src.subarray(from, from + run), o);
    for (let d = k - 1; d >= 0; d--) {
      idx[d] = (idx[d] as number) + 1;
      if ((idx[d] as number) < (extent[d] as number)) break;
      idx[d] = 0;
    }
  }
  return out;
}

function sliceKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (!plainDtype(x.dtype) || x.shape.length === 0) return stock(args);
    const { begin, size: sz } = args.attrs as unknown as {
      begin: number | number[];
      size: number | number[];
    };
    const [b, e] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, sz);
    return sliceOnHeap(args.backend as unknown as WasmDataBackend, x, b, e);
  };
}

function splitVKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (!plainDtype(x.dtype)) return stock(args);
    const { numOrSizeSplits, axis } = args.attrs as unknown as {
      numOrSizeSplits: number | number[];
      axis: number;
    };
    const ax = tf.util.parseAxisParam(axis, x.shape)[0] as number;
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
    const be = args.backend as unknown as WasmDataBackend;
    const begin = new Array<number>(x.shape.length).fill(0);
    return sizes.map((s) => {
      const extent = [...x.shape];
      extent[ax] = s;
      const part = sliceOnHeap(be, x, [...begin], extent);
      begin[ax] = (begin[ax] as number) + s;
      return part;
    });
  };
}

function unpackKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs.value as tf.TensorInfo;
    if (!plainDtype(x.dtype)) return stock(args);
    const rank = x.shape.length;
    let axis = (args.attrs as unknown as { axis: number }).axis;
    if (axis < 0) axis += rank;
    const be = args.backend as unknown as WasmDataBackend;
    const outShape = x.shape.filter((_, d) => d !== axis);
    const extent = [...x.shape];
    extent[axis] = 1;
    return Array.from({ length: x.shape[axis] as number }, (_, i) => {
      const begin = new Array<number>(rank).fill(0);
      begin[axis] = i;
      const part = sliceOnHeap(be, x, begin, extent);
      return { dataId: part.dataId, dtype: part.dtype, shape: outShape };
    });
  };
}

/** A clone that shares the input's buffer (tensors are immutable; the reference count frees it). */
function identityKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (!plainDtype(x.dtype)) return stock(args);
    (args.backend as unknown as WasmDataBackend).incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  };
}

/** out[o, i, j] = x[o, indices[i], j] for o over the axes before `axis`, j over those after it. */
function gatherKernel(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    const indices = args.inputs.indices as tf.TensorInfo;
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if (!plainDtype(x.dtype) || batchDims !== 0 || indices.dtype !== "int32") return stock(args);
    const ax = tf.util.parseAxisParam(axis, x.shape)[0] as number;
    const dim = x.shape[ax] as number;
    const outer = size(x.shape.slice(0, ax));
    const inner = size(x.shape.slice(ax + 1));
    const n = size(indices.shape);
    const be = args.backend as unknown as WasmDataBackend;
    const out = be.makeOutput([...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)], x.dtype);
    const src = be.typedArrayFromHeap(x);
    const dst = be.typedArrayFromHeap(out);
    const idx = be.typedArrayFromHeap(indices);
    for (let i = 0; i < n; i++) {
      const r = idx[i] as number;
      // the stock kernel's check and message
      if (r < 0 || r >= dim) throw new Error(`GatherV2: the index value ${r} is not in [0, ${dim - 1}]`);
    }
    for (let o = 0; o < outer; o++) {
      const from = o * dim * inner;
      const to = o * n * inner;
      if (inner === 1) {
        for (let i = 0; i < n; i++) dst[to + i] = src[from + (idx[i] as number)] as number;
        continue;
      }
      for (let i = 0; i < n; i++) {
        const row = from + (idx[i] as number) * inner;
        dst.set(src.subarray(row, row + inner), to + i * inner);
      }
    }
    return out;
  };
}

const MAKERS: Record<DataKernel, (stock: tf.KernelFunc) => tf.KernelFunc> = {
  Identity: identityKernel,
  Slice: sliceKernel,
  SplitV: splitVKernel,
  Unpack: unpackKernel,
  GatherV2: gatherKernel,
};

let stock: Map<DataKernel, tf.KernelConfig> | null = null;

/**
 * Serves Identity, Slice, SplitV, Unpack and GatherV2 on the initialised `wasm` backend from this
 * file (`views`) or from tfjs (`stock`, the reference the tests compare with). Returns the names
 * of the kernels now replaced (empty when the backend lacks the internals, and then nothing is).
 */
export function setWasmDataKernels(kind: "views" | "stock"): string[] {
  if (stock === null) {
    if (!hasDataInternals(tf.findBackend("wasm"))) return [];
    stock = new Map(NAMES.map((name) => [name, tf.getKernel(name, "wasm")]));
  }
  for (const name of NAMES) {
    const original = stock.get(name) as tf.KernelConfig;
    tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      ...original,
      kernelFunc: kind === "views" ? MAKERS[name](original.kernelFunc) : original.kernelFunc,
    });
  }
  return kind === "views" ? [...NAMES] : [];
}
