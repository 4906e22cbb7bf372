/**
 * TensorFlow.js backend selection.
 *
 * The backend is chosen once at start-up, `tensorflow` (tfjs-node-gpu, then tfjs-node) →
 * `wasm+blas` → `wasm` → `cpu`, overridable by config. The native packages download libtensorflow
 * at install time and cannot be installed on every machine, so they are imported dynamically and
 * never listed as hard dependencies; the wasm binaries ship inside `@tensorflow/tfjs-backend-wasm`
 * and are located on disk (no download). On wasm, the kernel workarounds of `wasm-kernels.ts` are
 * installed, because the stock kernels silently corrupt one-hot floats, lack the embedding
 * gradient and run batched/transposed matmuls 5–10x slower; where the OpenBLAS addon is built
 * (and `RLAIF_BLAS=0` is not set) the matmuls run on OpenBLAS, reported as `wasm+blas`.
 */
import { createRequire } from "node:module";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { ConfigError } from "../errors.js";
import { type BlasLoad, loadBlas } from "./native-blas.js";
import { registerWasmWorkarounds, wasmMatMulKind } from "./wasm-kernels.js";

/** The backends the project knows how to start, fastest first. */
export type BackendName = "tensorflow" | "wasm" | "cpu";

/** Fallback order: a preferred backend is tried first, then everything after it. */
export const BACKEND_ORDER: readonly BackendName[] = ["tensorflow", "wasm", "cpu"];

/** Environment variable read when no preference is passed (e.g. `RLAIF_TF_BACKEND=cpu`). */
export const BACKEND_ENV = "RLAIF_TF_BACKEND";

const NATIVE_PACKAGES = ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"];

let current: { requested: BackendName; result: Promise<string> } | null = null;

function wasmDistDir(): string {
  const require = createRequire(import.meta.url);
  return `${path.join(path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json")), "dist")}${path.sep}`;
}

let wasmPathsSet = false;
let blasLoad: BlasLoad | null = null;

async function tryBackend(name: BackendName): Promise<boolean> {
  if (name === "tensorflow") {
    for (const pkg of NATIVE_PACKAGES) {
      try {
        // A variable specifier keeps TypeScript and bundlers from requiring the optional package.
        const specifier: string = pkg;
        await import(specifier);
        if (tf.findBackend("tensorflow") !== null && (await tf.setBackend("tensorflow"))) return true;
      } catch {
        // Not installed (the usual case on CPU machines): fall through to the next candidate.
      }
    }
    return false;
  }
  if (name === "wasm" && !wasmPathsSet) {
    try {
      setWasmPaths(wasmDistDir());
    } catch {
      // Already initialised by someone else: the paths they chose are in effect.
    }
    wasmPathsSet = true;
  }
  try {
    if (!(await tf.setBackend(name))) return false;
    await tf.ready();
  } catch {
    return false;
  }
  if (name === "wasm") {
    blasLoad = loadBlas();
    registerWasmWorkarounds(blasLoad.addon);
  }
  return true;
}

function parseName(value: string, source: string): BackendName {
  if ((BACKEND_ORDER as readonly string[]).includes(value)) return value as BackendName;
  throw new ConfigError(
    `${source}: unknown backend '${value}' (expected one of ${BACKEND_ORDER.join(", ")})`,
  );
}

async function select(preferred: BackendName): Promise<string> {
  const candidates = BACKEND_ORDER.slice(BACKEND_ORDER.indexOf(preferred));
  for (const name of candidates) {
    if (await tryBackend(name)) return activeBackend();
  }
  throw new ConfigError(`no TensorFlow.js backend could be started (tried ${candidates.join(", ")})`);
}

/**
 * The backend in use as it is reported (GetInfo, logs): tf's name, with `+blas` when the wasm
 * backend's matmuls run on OpenBLAS.
 */
export function activeBackend(): string {
  const name = tf.getBackend();
  return name === "wasm" && wasmMatMulKind() === "blas" ? "wasm+blas" : name;
}

/**
 * {@link activeBackend} with what a log reader needs to know about it: the OpenBLAS build and
 * thread count, or why the wasm backend runs without BLAS.
 */
export function describeBackend(): string {
  const name = activeBackend();
  if (name === "wasm+blas" && blasLoad?.addon) {
    const info = blasLoad.addon.info();
    return `${name} (${info.config.split(" ").slice(0, 2).join(" ")} ${info.corename}, ${info.threads} thread${info.threads === 1 ? "" : "s"})`;
  }
  if (name === "wasm" && blasLoad !== null && blasLoad.addon === null)
    return `${name} (no BLAS: ${blasLoad.reason})`;
  return name;
}

/**
 * Starts a TensorFlow.js backend and returns the name of the one in use ({@link activeBackend}).
 *
 * `preferred` (else `$RLAIF_TF_BACKEND`, else `tensorflow`) is tried first and the faster-to-slower
 * chain continues below it, so `initBackend('wasm')` never loads native TensorFlow and
 * `initBackend('cpu')` is the reproducible reference. Idempotent: repeated calls with the same (or
 * no) preference share one initialisation; a different preference switches backends. Throws
 * ConfigError for an unknown name or when nothing can start.
 */
export function initBackend(preferred?: BackendName): Promise<string> {
  const env = process.env[BACKEND_ENV];
  const requested =
    preferred !== undefined
      ? parseName(preferred, "backend")
      : current !== null
        ? current.requested
        : env !== undefined && env !== ""
          ? parseName(env, BACKEND_ENV)
          : "tensorflow";
  if (current !== null && current.requested === requested) return current.result;
  const result = select(requested);
  current = { requested, result };
  result.catch(() => {
    if (current?.result === result) current = null;
  });
  return result;
}

/**
 * The backend a service was configured with: `auto` takes the fastest that starts; an explicit
 * name must start as asked. A GPU pod configured for `tensorflow` must fail loudly rather than
 * quietly train on wasm when the native library is missing.
 */
export async function startBackend(choice: "auto" | BackendName): Promise<string> {
  const started = await initBackend(choice === "auto" ? undefined : choice);
  if (choice !== "auto" && started.split("+")[0] !== choice) {
    throw new ConfigError(
      `backend "${choice}" could not be started (fell back to "${started}")` +
        (choice === "tensorflow"
          ? ": install @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node, or use --backend auto"
          : ""),
    );
  }
  return started;
}
