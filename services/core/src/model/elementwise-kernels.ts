/**
 * `Add`, `Sub` and `Multiply` for the tfjs `wasm` backend, computed by the addon
 * (native/blas/elementwise.c) zero-copy on the wasm heap and split over the OpenBLAS threads.
 *
 * Why: with two OpenBLAS threads the learner step's products take half their time, and tfjs's
 * one-threaded binary kernels (the residual adds, the sums of gradients that autodiff
 * accumulates, the loss's masks and scales: ~100 calls a Transformer step) became ~8% of it.
 * Each output is one IEEE float operation on the same two inputs as tfjs-wasm's own kernel, so the
 * results are bitwise tfjs's (test/model-blas-elementwise.test.ts compares them).
 *
 * Handled: float32 operands where one has as many elements as the output and the other either too,
 * or is a scalar, a row repeated over the leading axes ([C] against [N, C]) or a column spread over
 * the trailing ones ([N, 1] against [N, C]). Everything else (int32, two broadcast operands, short
 * periods, small tensors) goes to the stock kernel, and so does everything when the addon was built
 * before it had `elementwise` (a stale build: `npm run build:native` rebuilds it).
 */
import * as tf from "@tensorflow/tfjs";
import { heapF32, offsetOf, type WasmHeapBackend } from "./blas-kernels.js";
import type { BlasAddon } from "./native-blas.js";

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The kernels served, with the addon's op code of each. */
const OPS = { Add: 0, Sub: 1, Multiply: 2 } as const;
type OpName = keyof typeof OPS;

/** How an operand's element index follows the output's (elementwise.c's modes). */
const MODE = { full: 0, row: 1, spread: 2, scalar: 3 } as const;

/** Below this many output elements the stock kernel is kept (no thread would be started anyway). */
export const MIN_ELEMENTS = 4096;
/** The shortest repeated row or spread run worth a segment of its own. */
const MIN_PERIOD = 32;

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * The mode and period of an operand of `shape` broadcast to `out` (tfjs's numpy rules), or null
 * when it is none of the handled patterns.
 */
export function broadcastMode(shape: readonly number[], out: readonly number[]): [number, number] | null {
  const n = size(out);
  const count = size(shape);
  if (count === n) return [MODE.full, 1];
  if (count === 1) return [MODE.scalar, 1];
  const padded = [...Array(out.length - shape.length).fill(1), ...shape] as number[];
  const first = padded.findIndex((d) => d !== 1);
  // a row: leading ones, then the output's own trailing axes
  if (padded.slice(first).every((d, i) => d === out[first + i])) {
    return count >= MIN_PERIOD ? [MODE.row, count] : null;
  }
  // a column: the output's leading axes, then trailing ones
  const last = padded.length - 1 - [...padded].reverse().findIndex((d) => d !== 1);
  if (padded.slice(0, last + 1).every((d, i) => d === out[i])) {
    const period = n / count;
    return period >= MIN_PERIOD ? [MODE.spread, period] : null;
  }
  return null;
}

function binaryKernel(blas: BlasAddon, op: OpName, original: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const a = args.inputs.a as tf.TensorInfo;
    const b = args.inputs.b as tf.TensorInfo;
    if (a.dtype !== "float32" || b.dtype !== "float32") return original.kernelFunc(args);
    const out = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const n = size(out);
    const ma = broadcastMode(a.shape, out);
    const mb = broadcastMode(b.shape, out);
    if (n < MIN_ELEMENTS || ma === null || mb === null || (ma[0] !== MODE.full && mb[0] !== MODE.full)) {
      return original.kernelFunc(args);
    }
    const be = args.backend as unknown as WasmHeapBackend;
    const y = be.makeOutput(out, "float32");
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    blas.elementwise(
      OPS[op],
      heap,
      offsetOf(be, a),
      ...ma,
      heap,
      offsetOf(be, b),
      ...mb,
      heap,
      offsetOf(be, y),
      n,
    );
    return y;
  };
}

let stock: Map<OpName, tf.KernelConfig> | null = null;

/**
 * Serves Add, Sub and Multiply on `wasm` from `blas`, or restores tfjs's kernels (null: the
 * reference the tests compare with). Returns the names of the kernels now served by the addon.
 */
export function setElementwiseKernels(blas: BlasAddon | null): string[] {
  if (stock === null) {
    stock = new Map(
      (Object.keys(OPS) as OpName[]).map((name): [OpName, tf.KernelConfig] => [
        name,
        tf.getKernel(name, "wasm"),
      ]),
    );
  }
  const served = blas !== null && typeof blas.elementwise === "function";
  for (const [name, original] of stock) {
    tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      ...original,
      kernelFunc: served ? binaryKernel(blas, name, original) : original.kernelFunc,
    });
  }
  return served ? [...stock.keys()] : [];
}
