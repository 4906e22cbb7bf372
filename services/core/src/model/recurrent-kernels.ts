/**
 * Whole-sequence GRU and LSTM kernels for the tfjs `wasm` backend, computed by the project's addon
 * (native/blas/recurrent.c): a layer's forward recurrence is one kernel, its backpropagation
 * through time another, zero-copy on the wasm heap.
 *
 * Why: in tfjs ops a recurrent step is 10–25 kernel dispatches forward and as many backward,
 * each a pass over a small [B, H] block; a learner step of the LSTM ran ~4,700 kernels, and
 * decoding one token paid the same per-step overhead. gru-layer.ts and lstm-layer.ts call these
 * when the active backend has them (`hasRecurrentKernel`) and run the same maths in tfjs ops
 * otherwise. Registered with the OpenBLAS kernels (`setWasmMatMul("blas")`) and removed with them.
 */
import * as tf from "@tensorflow/tfjs";
import { heapF32, invariantRowCount, offsetOf, type WasmHeapBackend } from "./blas-kernels.js";
import type { BlasAddon } from "./native-blas.js";

/** Kernel names (inputs → outputs; T·B rows time-major, gate width G·H). */
export const RECURRENT = {
  /** {a [T·B, 3H], w [H, 3H], bias [3H], h0 [B, H], mask? [T·B, 1]} → [hs [T·B, H], gates [T·B, 4H]]. */
  gruForward: "RlaifGruForward",
  /** {dy [T·B, H], w, h0, hs, gates, mask?} → [∂a [T·B, 3H], ∂w [H, 3H], ∂bias [3H], ∂h0 [B, H]]. */
  gruBackward: "RlaifGruBackward",
  /** {a [T·B, 4H], w [H, 4H], bias [4H], h0, c0 [B, H], mask?} → [out [(T+1)·B, H], cs, gates [T·B, 4H], tc]. */
  lstmForward: "RlaifLstmForward",
  /** {dy [(T+1)·B, H], w, h0, c0, out, cs, gates, tc, mask?} → [∂a, ∂w, ∂bias, ∂h0, ∂c0]. */
  lstmBackward: "RlaifLstmBackward",
} as const;

type Name = (typeof RECURRENT)[keyof typeof RECURRENT];

function float32(name: string, inputs: (tf.TensorInfo | undefined)[]): tf.TensorInfo[] {
  const present = inputs.filter((t): t is tf.TensorInfo => t !== undefined);
  for (const t of present)
    if (t.dtype !== "float32") throw new Error(`${name}: expected float32, got ${t.dtype}`);
  return present;
}

/**
 * A kernel that allocates `outShapes(inputs)` and calls `run` with the heap and the element
 * offsets of `order`'s inputs (−1 for an absent one), then of the outputs.
 */
function kernel(
  name: Name,
  order: readonly string[],
  outShapes: (ins: Record<string, tf.TensorInfo | undefined>) => number[][],
  run: (heap: Float32Array, offsets: number[], ins: Record<string, tf.TensorInfo | undefined>) => void,
): tf.KernelFunc {
  return (args) => {
    const ins = args.inputs as Record<string, tf.TensorInfo | undefined>;
    float32(
      name,
      order.map((k) => ins[k]),
    );
    const be = args.backend as unknown as WasmHeapBackend;
    const outs = outShapes(ins).map((shape) => be.makeOutput(shape, "float32"));
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    const at = (t: tf.TensorInfo | undefined) => (t === undefined ? -1 : offsetOf(be, t));
    run(heap as Float32Array, [...order.map((k) => at(ins[k])), ...outs.map(at)], ins);
    return outs;
  };
}

const dims = (t: tf.TensorInfo | undefined) => (t as tf.TensorInfo).shape as [number, number];

/** [steps, batch, hidden] from a's rows and h0's shape. */
function sizes(ins: Record<string, tf.TensorInfo | undefined>, rows: number): [number, number, number] {
  const [b, h] = dims(ins.h0);
  return [rows / b, b, h];
}

/** An addon entry point: the heap, then offsets and counts. */
type HeapCall = (heap: Float32Array, ...offsetsAndCounts: number[]) => void;

function kernels(blas: BlasAddon): Record<keyof typeof RECURRENT, tf.KernelFunc> {
  const forward =
    (name: Name, order: string[], outs: (rows: number, b: number, h: number) => number[][], fn: HeapCall) =>
    (args: Parameters<tf.KernelFunc>[0]) => {
      const block = (args.attrs as { block?: number }).block ?? 0;
      const rowsOf = (ins: Record<string, tf.TensorInfo | undefined>) => dims(ins.a)[0];
      return kernel(
        name,
        order,
        (ins) => outs(rowsOf(ins), ...dims(ins.h0)),
        (heap, o, ins) => fn(heap, ...o, ...sizes(ins, rowsOf(ins)), block),
      )(args);
    };
  const backward = (
    name: Name,
    order: string[],
    rowsOf: (ins: Record<string, tf.TensorInfo | undefined>) => number,
    outs: (rows: number, b: number, h: number) => number[][],
    fn: HeapCall,
  ) =>
    kernel(
      name,
      order,
      (ins) => outs(rowsOf(ins), ...dims(ins.h0)),
      (heap, o, ins) => fn(heap, ...o, ...sizes(ins, rowsOf(ins))),
    );
  return {
    gruForward: forward(
      RECURRENT.gruForward,
      ["a", "w", "bias", "h0", "mask"],
      (rows, _b, h) => [
        [rows, h],
        [rows, 4 * h],
      ],
      blas.gruForward,
    ),
    gruBackward: backward(
      RECURRENT.gruBackward,
      ["dy", "w", "h0", "hs", "gates", "mask"],
      (ins) => dims(ins.hs)[0],
      (rows, b, h) => [[rows, 3 * h], [h, 3 * h], [3 * h], [b, h]],
      blas.gruBackward,
    ),
    lstmForward: forward(
      RECURRENT.lstmForward,
      ["a", "w", "bias", "h0", "c0", "mask"],
      (rows, b, h) => [
        [rows + b, h],
        [rows, h],
        [rows, 4 * h],
        [rows, h],
      ],
      blas.lstmForward,
    ),
    lstmBackward: backward(
      RECURRENT.lstmBackward,
      ["dy", "w", "h0", "c0", "out", "cs", "gates", "tc", "mask"],
      (ins) => dims(ins.cs)[0],
      (rows, b, h) => [[rows, 4 * h], [h, 4 * h], [4 * h], [b, h], [b, h]],
      blas.lstmBackward,
    ),
  };
}

/** Registers the recurrent kernels on `wasm` from `blas` (null: removes them, so layers fall back). */
export function setRecurrentKernels(blas: BlasAddon | null): void {
  const funcs = blas === null ? null : kernels(blas);
  for (const [key, kernelName] of Object.entries(RECURRENT) as [keyof typeof RECURRENT, string][]) {
    if (tf.getKernel(kernelName, "wasm") !== undefined) tf.unregisterKernel(kernelName, "wasm");
    if (funcs !== null) tf.registerKernel({ kernelName, backendName: "wasm", kernelFunc: funcs[key] });
  }
}

/** Whether the active backend has recurrent kernel `name` (else the layers run tfjs ops). */
export function hasRecurrentKernel(name: Name): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/**
 * Runs recurrent kernel `name` (check {@link hasRecurrentKernel} first) on `inputs`, absent
 * entries (a null mask) left out; forward kernels get the current `batchInvariant` row count.
 */
export function runRecurrent(name: Name, inputs: Record<string, tf.Tensor | null>): tf.Tensor[] {
  const given: tf.NamedTensorMap = {};
  for (const [k, t] of Object.entries(inputs)) if (t !== null) given[k] = t;
  const attrs: tf.NamedAttrMap =
    name === RECURRENT.gruForward || name === RECURRENT.lstmForward ? { block: invariantRowCount() } : {};
  return tf.engine().runKernel(name, given, attrs) as tf.Tensor[];
}
