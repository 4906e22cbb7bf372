/**
 * One thread's memory, as a soak test needs to tell a leak from a high-water mark. Why per thread:
 * an embedded run holds three TensorFlow.js instances (main, Policy thread, learner thread), each
 * with its own tensors, V8 heap and — on the wasm backend — its own WebAssembly heap, which only
 * ever grows; the process's RSS alone cannot say which of them grows, or whether the growth is
 * live tensors (a leak) or a wasm heap that grew once to its peak and is merely reused.
 */
import * as tf from "@tensorflow/tfjs";

/** A snapshot of one thread's memory (bytes; RSS is the whole process's, read from this thread). */
export interface ThreadMemory {
  /** Resident set of the whole process. */
  rss: number;
  /** This thread's V8 heap in use. */
  heapUsed: number;
  /** C++ objects bound to this thread's JS objects (Buffers, ArrayBuffers, ...). */
  external: number;
  /** ArrayBuffers and SharedArrayBuffers of this thread (part of `external`). */
  arrayBuffers: number;
  /** Size of the tfjs-wasm backend's WebAssembly memory (0 when the backend is not wasm). */
  wasmHeap: number;
  /** Live tensors in this thread's TensorFlow.js (`tf.memory().numTensors`). */
  numTensors: number;
  /** Bytes those tensors hold (`tf.memory().numBytes`). */
  numBytes: number;
}

/**
 * The engine's own counters, read without `tf.memory()`: that call starts a backend where none was
 * started (the main thread of an embedded run computes nothing), which a probe must not do.
 */
interface EngineView {
  backendName: string | null;
  backendInstance: { wasm?: { HEAPU8?: Uint8Array } } | null;
  state: { numTensors: number; numBytes: number };
}

/** The wasm backend's WebAssembly memory size (0 where the thread runs no wasm backend). */
function wasmHeapBytes(engine: EngineView): number {
  if (engine.backendName !== "wasm") return 0;
  return engine.backendInstance?.wasm?.HEAPU8?.buffer.byteLength ?? 0;
}

/** This thread's memory now. */
export function threadMemory(): ThreadMemory {
  const m = process.memoryUsage();
  const engine = tf.engine() as unknown as EngineView;
  const t = engine.state;
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    wasmHeap: wasmHeapBytes(engine),
    numTensors: t.numTensors,
    numBytes: t.numBytes,
  };
}
