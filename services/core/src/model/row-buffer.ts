/**
 * A float32 tensor [capacity, ...rowShape] that decoding updates row by row: the KV cache of a
 * Transformer, the recurrent state of an RNN, one slot per generated row.
 *
 * Why not tensor ops: on the wasm backend the ops that would do it copy everything and are slow
 * at these sizes (measured for 8 tensors [64, 4, 64, 32], the default Transformer's cache at 64
 * rows: `gather` of 56 rows 94 ms, `slice` 13–19 ms, `tensorScatterUpdate` of one column 1.5 ms,
 * re-uploading the whole cache 1.6 ms; a per-token `concat` 0.9 ms and growing). Writing the rows
 * in place in the wasm heap takes 0.1 ms. So on wasm the buffer is a backend tensor written
 * through a view of its heap memory (the same backend internals wasm-kernels.ts uses; a tensor
 * only this buffer holds, so no other reader sees it change); elsewhere (cpu, tfjs-node) it is a
 * JS array uploaded as a fresh tensor when read after a write.
 */
import * as tf from "@tensorflow/tfjs";

/** The part of tfjs-backend-wasm's `BackendWasm` this uses (stable within 4.22.0). */
interface HeapBackend {
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

function heapBackend(): HeapBackend | null {
  const be = tf.backend() as unknown as Partial<HeapBackend>;
  return tf.getBackend() === "wasm" && typeof be.typedArrayFromHeap === "function"
    ? (be as HeapBackend)
    : null;
}

/** Rows of one shape in a tensor, written in place. */
export class RowBuffer {
  /** Floats per row. */
  readonly rowSize: number;
  private rows: number;
  private readonly heap = heapBackend();
  /** wasm: the backend tensor. Elsewhere: the last upload of `data` (null when stale). */
  private held: tf.Tensor | null = null;
  private data: Float32Array;

  /** `capacity` rows of `rowShape`, every value `fill`. */
  constructor(
    readonly rowShape: readonly number[],
    capacity: number,
    readonly fill = 0,
  ) {
    this.rowSize = rowShape.reduce((a, b) => a * b, 1);
    this.rows = capacity;
    this.data = new Float32Array(this.heap ? 0 : capacity * this.rowSize).fill(fill);
    if (this.heap) this.held = this.allocate(capacity);
  }

  /** Rows held. */
  get capacity(): number {
    return this.rows;
  }

  /** The rows as a tensor [capacity, ...rowShape]; owned by the buffer, valid until its next change. */
  tensor(): tf.Tensor {
    // kept: a read inside a model's tf.tidy must not free the buffer's own tensor
    if (this.held === null)
      this.held = tf.keep(tf.tensor(this.data, [this.rows, ...this.rowShape], "float32"));
    return this.held;
  }

  /**
   * Lets `write` change the values in place through a flat view [capacity × rowSize] (row r at
   * r·rowSize). The view is valid only during the call: allocating tensors can move the heap.
   */
  update(write: (values: Float32Array) => void): void {
    if (this.heap) {
      write(this.heap.typedArrayFromHeap(this.held as tf.Tensor) as Float32Array);
      return;
    }
    write(this.data);
    this.held?.dispose();
    this.held = null;
  }

  /** Re-lays the rows: new row i is old row keep[i]; rows past keep.length hold `fill`. */
  resize(capacity: number, keep: readonly number[]): void {
    const n = this.rowSize;
    if (this.heap) {
      const next = this.allocate(capacity);
      // Views only after the allocation: growing the heap detaches older views.
      const to = this.heap.typedArrayFromHeap(next) as Float32Array;
      const from = this.heap.typedArrayFromHeap(this.held as tf.Tensor) as Float32Array;
      keep.forEach((old, i) => {
        to.set(from.subarray(old * n, (old + 1) * n), i * n);
      });
      this.held?.dispose();
      this.held = next;
    } else {
      const next = new Float32Array(capacity * n).fill(this.fill);
      keep.forEach((old, i) => {
        next.set(this.data.subarray(old * n, (old + 1) * n), i * n);
      });
      this.data = next;
      this.held?.dispose();
      this.held = null;
    }
    this.rows = capacity;
  }

  /** Frees the backend memory. */
  dispose(): void {
    this.held?.dispose();
    this.held = null;
  }

  private allocate(capacity: number): tf.Tensor {
    return tf.keep(tf.fill([capacity, ...this.rowShape], this.fill, "float32"));
  }
}
