/**
 * `UnsortedSegmentSum` over rows for the tfjs `wasm` backend, computed by the addon
 * (native/blas/segment-sum.c) zero-copy on the wasm heap and split over its threads.
 *
 * Why: it is the gradient of the embedding lookups (token and position rows, [N, C] into
 * [V, C]); the JavaScript kernel of wasm-kernels.ts took ~1–5 ms per call of a learner step on one
 * thread. The addon adds each segment's rows in the same order in float32, so the result is
 * bitwise the JavaScript kernel's (test/model-blas-segment.test.ts). Handled: float32 rows with
 * int32 ids of rank 1; everything else (and an addon built before `segmentSum`) goes to `fallback`.
 */
import type * as tf from "@tensorflow/tfjs";
import { heapF32, offsetOf, type WasmHeapBackend } from "./blas-kernels.js";
import type { BlasAddon } from "./native-blas.js";

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** An `UnsortedSegmentSum` kernel on the addon, `fallback` where it does not apply. */
export function makeBlasSegmentSum(blas: BlasAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  const segmentSum = blas.segmentSum?.bind(blas);
  if (segmentSum === undefined) return fallback;
  return (args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    const ids = args.inputs.segmentIds as tf.TensorInfo;
    const numSegments = (args.attrs as unknown as { numSegments: number }).numSegments;
    if (
      x.dtype !== "float32" ||
      ids.dtype !== "int32" ||
      ids.shape.length !== 1 ||
      x.shape[0] !== ids.shape[0]
    ) {
      return fallback(args);
    }
    const inner = x.shape.slice(1);
    const width = inner.reduce((a, b) => a * b, 1);
    const be = args.backend as unknown as WasmHeapBackend;
    const out = be.makeOutput([numSegments, ...inner], "float32");
    const heap = heapF32(be); // after makeOutput: the allocation may have replaced the buffer
    // the int32 ids are read through the float32 view of the same heap (their bits, same offsets)
    segmentSum(
      heap,
      offsetOf(be, x),
      heap,
      offsetOf(be, ids),
      heap,
      offsetOf(be, out),
      ids.shape[0] as number,
      width,
      numSegments,
    );
    return out;
  };
}
