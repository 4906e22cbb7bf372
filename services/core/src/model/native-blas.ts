/**
 * The project's OpenBLAS addon (native/blas), loaded once if it was built.
 *
 * Why an addon: the wasm backend's own matmul reaches 25–30 GFLOP/s on a plain product and
 * 1–10 on the transposed and batched products of attention and of every backward pass; OpenBLAS
 * sgemm reaches ~100 per core on the same shapes, and the addon calls it on the wasm heap without
 * copying. `npm ci` builds it where a compiler and libopenblas-dev exist (`npm run build:native`
 * builds it explicitly); elsewhere it is absent and the wasm kernels are used.
 *
 * `RLAIF_BLAS=0` forces the pure-wasm path (e.g. to compare both paths); `OPENBLAS_NUM_THREADS`,
 * when set, overrides {@link DEFAULT_BLAS_THREADS}; `OPENBLAS_CORETYPE`, when set, overrides the
 * kernel family {@link coreTypeFor} picks.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/**
 * The addon's exports (native/blas/blas.c, fused.c, layer-norm.c, elementwise.c, segment-sum.c, recurrent.c,
 * attention.c, gelu.c, softmax.c and decoder-attention.c document each argument).
 */
export interface BlasAddon {
  /**
   * C_i = alpha·op(A_i)·op(B_i) + beta·C_i for i < batch, row-major; offsets and strides in
   * elements, a stride of 0 reuses one matrix. Throws RangeError when a matrix leaves its array.
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    aOffset: number,
    aStride: number,
    b: Float32Array,
    bOffset: number,
    bStride: number,
    beta: number,
    c: Float32Array,
    cOffset: number,
    cStride: number,
    batch: number,
  ): void;
  /** y = x σ(u), u = x (2c + 2ca x²) over n elements (native/blas/gelu.c documents these two). */
  geluForward(x: Float32Array, xOffset: number, y: Float32Array, yOffset: number, n: number): void;
  /** dx = dy s (1 + (1 − s) x (2c + 6ca x²)), s = σ(u), over n elements. */
  geluBackward(
    dy: Float32Array,
    dyOffset: number,
    x: Float32Array,
    xOffset: number,
    dx: Float32Array,
    dxOffset: number,
    n: number,
  ): void;
  /** LayerNorm of rows × cols: y, x̂ and 1/σ per row (native/blas/layer-norm.c documents it and the next). */
  layerNorm(
    x: Float32Array,
    xOffset: number,
    g: Float32Array,
    gOffset: number,
    b: Float32Array,
    bOffset: number,
    y: Float32Array,
    yOffset: number,
    xhat: Float32Array,
    xhatOffset: number,
    rstd: Float32Array,
    rstdOffset: number,
    rows: number,
    cols: number,
    eps: number,
  ): void;
  /** LayerNorm's backward: dx per row, dγ and dβ summed over rows. */
  layerNormGrad(
    dy: Float32Array,
    dyOffset: number,
    xhat: Float32Array,
    xhatOffset: number,
    rstd: Float32Array,
    rstdOffset: number,
    g: Float32Array,
    gOffset: number,
    dx: Float32Array,
    dxOffset: number,
    dg: Float32Array,
    dgOffset: number,
    db: Float32Array,
    dbOffset: number,
    rows: number,
    cols: number,
  ): void;
  /** One Adam(W) update over n elements: writes θ', m', v' (fused.c gives the equations and the next). */
  adam(
    p: Float32Array,
    pOffset: number,
    g: Float32Array,
    gOffset: number,
    m: Float32Array,
    mOffset: number,
    v: Float32Array,
    vOffset: number,
    p2: Float32Array,
    p2Offset: number,
    m2: Float32Array,
    m2Offset: number,
    v2: Float32Array,
    v2Offset: number,
    n: number,
    beta1: number,
    oneMinusBeta1: number,
    beta2: number,
    oneMinusBeta2: number,
    epsilon: number,
    step: number,
    sqrtBc2: number,
    decay: number,
    gradScale: number,
  ): void;
  /** The GRU backward's gate factors of every step (fused.c; `m` null: no masks). */
  gruFactors(
    hp: Float32Array,
    hpOffset: number,
    r: Float32Array,
    rOffset: number,
    z: Float32Array,
    zOffset: number,
    n: Float32Array,
    nOffset: number,
    uN: Float32Array,
    uNOffset: number,
    m: Float32Array | null,
    mOffset: number,
    pa: Float32Array,
    paOffset: number,
    pu: Float32Array,
    puOffset: number,
    zc: Float32Array,
    zcOffset: number,
    rows: number,
    h: number,
  ): void;
  /**
   * out[i] = a[ia(i)] op b[ib(i)] for i < n, op 0: +, 1: −, 2: ×; each operand's (mode, period) says
   * how its index follows i (native/blas/elementwise.c: 0 full, 1 a repeated row, 2 a spread
   * column, 3 a scalar); one operand must be full.
   */
  elementwise(
    op: number,
    a: Float32Array,
    aOffset: number,
    aMode: number,
    aPeriod: number,
    b: Float32Array,
    bOffset: number,
    bMode: number,
    bPeriod: number,
    out: Float32Array,
    outOffset: number,
    n: number,
  ): void;
  /** Per row of z [rows, cols]: p = softmax(z), lse = log Σ exp z (native/blas/softmax.c). */
  softmaxLse(
    z: Float32Array,
    zOffset: number,
    p: Float32Array,
    pOffset: number,
    lse: Float32Array,
    lseOffset: number,
    rows: number,
    cols: number,
  ): void;
  /** Causal attention of every (sequence, head) on q | k | v rows (attention.c gives the layout). */
  attentionForward(
    qkv: Float32Array,
    qkvOffset: number,
    y: Float32Array,
    yOffset: number,
    p: Float32Array,
    pOffset: number,
    b: number,
    s: number,
    h: number,
    d: number,
    scale: number,
  ): void;
  /** attentionForward's backward: ∂L/∂qkv from ∂L/∂y and the saved weights p. */
  attentionBackward(
    dy: Float32Array,
    dyOffset: number,
    qkv: Float32Array,
    qkvOffset: number,
    p: Float32Array,
    pOffset: number,
    dqkv: Float32Array,
    dqkvOffset: number,
    b: number,
    s: number,
    h: number,
    d: number,
    scale: number,
  ): void;
  /**
   * One GRU layer's recurrence over every step (native/blas/recurrent.c gives the layouts): each
   * tensor is an element offset on `heap`, the mask −1 when absent.
   */
  gruForward(
    heap: Float32Array,
    a: number,
    w: number,
    bias: number,
    h0: number,
    mask: number,
    hs: number,
    gates: number,
    steps: number,
    batch: number,
    hidden: number,
    block: number,
  ): void;
  /** The GRU layer's backpropagation through time: ∂a, ∂W_hh, ∂b_hh and ∂h₀. */
  gruBackward(
    heap: Float32Array,
    dy: number,
    w: number,
    h0: number,
    hs: number,
    gates: number,
    mask: number,
    da: number,
    dw: number,
    db: number,
    dh0: number,
    steps: number,
    batch: number,
    hidden: number,
  ): void;
  /** One LSTM layer's recurrence over every step: h_t of every step and the final c, c_t, gates, tanh c'. */
  lstmForward(
    heap: Float32Array,
    a: number,
    w: number,
    bias: number,
    h0: number,
    c0: number,
    mask: number,
    out: number,
    cs: number,
    gates: number,
    tc: number,
    steps: number,
    batch: number,
    hidden: number,
    block: number,
  ): void;
  /** The LSTM layer's backpropagation through time: ∂a, ∂W_hh, ∂b_hh, ∂h₀ and ∂c₀. */
  lstmBackward(
    heap: Float32Array,
    dy: number,
    w: number,
    h0: number,
    c0: number,
    out: number,
    cs: number,
    gates: number,
    tc: number,
    mask: number,
    da: number,
    dw: number,
    db: number,
    dh0: number,
    dc0: number,
    steps: number,
    batch: number,
    hidden: number,
  ): void;
  /**
   * Softmax attention of J queries per row over its own S keys and values (decoder-attention.c): q
   * [B, J, H], keys and values [B, S, H], bias [B, S], ctx [B, J, H], as element offsets on `heap`.
   */
  attend(
    heap: Float32Array,
    q: number,
    keys: number,
    values: number,
    bias: number,
    ctx: number,
    batch: number,
    queries: number,
    width: number,
    hidden: number,
  ): void;
  /** y = tanh x = 2σ(2x) − 1 over n floats (decoder-attention.c), element offsets on `heap`. */
  tanh(heap: Float32Array, x: number, y: number, n: number): void;
  /**
   * out[s, :] = Σ_{i: ids[i] = s} x[i, :] over n rows of `width` floats, `segments` output rows
   * (segment-sum.c); `ids` is an int32 tensor seen through a Float32Array view of the same heap.
   * Optional: builds before it lack it.
   */
  segmentSum?(
    x: Float32Array,
    xOffset: number,
    ids: Float32Array,
    idsOffset: number,
    out: Float32Array,
    outOffset: number,
    n: number,
    width: number,
    segments: number,
  ): void;
  /**
   * The addon's thread count: its large products (split into independent one-thread OpenBLAS
   * calls, native/blas/gemm.h) and its kernels (parallel.h) run on n threads.
   */
  setThreads(n: number): void;
  info(): { threads: number; corename: string; config: string };
}

/** Environment switch: `RLAIF_BLAS=0` (or `false`, `off`) never loads the addon. */
export const BLAS_ENV = "RLAIF_BLAS";

/**
 * The addon's threads (OpenBLAS's count at load, then `setThreads`) unless `OPENBLAS_NUM_THREADS` is set. One: embedded, or with every service
 * on one machine, the learner shares the cores with the Policy, and the second core is worth more
 * to sampling than to the learner's products. An Optimizer with cores of its own sets the variable
 * to its core count (k8s/base/optimizer.yaml: 2); the addon's attention, GELU, LayerNorm,
 * softmax, Adam and Add/Sub/Multiply kernels and its large products then split over as many threads (docs/platform-notes.md#native-blas).
 */
export const DEFAULT_BLAS_THREADS = 1;

/** Where `npm ci` / `npm run build:native` leaves the addon. */
export const ADDON_PATH = fileURLToPath(
  new URL("../../../../native/blas/build/Release/rlaif_blas.node", import.meta.url),
);

/** OpenBLAS's own switch for its kernel family (a DYNAMIC_ARCH build reads it when it loads). */
export const CORETYPE_ENV = "OPENBLAS_CORETYPE";

/**
 * The OpenBLAS kernel family for a CPU with these `/proc/cpuinfo` flags: `SkylakeX` with
 * AVX-512 (F, CD, BW, DQ, VL), `Haswell` with AVX2 and FMA, else undefined (OpenBLAS decides).
 * Why: a DYNAMIC_ARCH OpenBLAS picks its kernels by CPU model, and a model newer than the library
 * falls back to its SSE3 `Prescott` kernels. Debian 12's 0.3.21 does so on Emerald Rapids (family
 * 6, model 207): the byte-level Transformer's learner step took 647 ms instead of 287 ms. By
 * flags, every AVX-512 or AVX2 x86 core gets the sgemm kernels that OpenBLAS's own detection
 * gives the cores it knows (Cooperlake and SapphireRapids reuse SkylakeX's, Zen Haswell's).
 */
export function coreTypeFor(cpuinfo: string): string | undefined {
  const line = cpuinfo.split("\n").find((l) => /^flags\s*:/.test(l));
  if (line === undefined) return undefined;
  const flags = new Set(
    line
      .slice(line.indexOf(":") + 1)
      .trim()
      .split(/\s+/),
  );
  const has = (...names: string[]) => names.every((n) => flags.has(n));
  if (has("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")) return "SkylakeX";
  if (has("avx2", "fma")) return "Haswell";
  return undefined;
}

/**
 * Sets `OPENBLAS_CORETYPE` in this process's environment from the CPU's flags, unless it is set
 * already (the operator's choice wins) or the flags cannot be read (not Linux x86-64). Before the
 * addon loads, because OpenBLAS reads it once, then. It stays set, so a child process on the same
 * OpenBLAS (the PyTorch twin of bench/speed.ts) runs the same kernels.
 */
function chooseCoreType(env: NodeJS.ProcessEnv): void {
  const set = env[CORETYPE_ENV] ?? process.env[CORETYPE_ENV];
  if (set !== undefined || process.platform !== "linux" || process.arch !== "x64") return;
  let cpuinfo: string;
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return;
  }
  const core = coreTypeFor(cpuinfo);
  if (core !== undefined) process.env[CORETYPE_ENV] = core;
}

/** Why the addon is not in use (for logs), or the addon. */
export type BlasLoad = { addon: BlasAddon } | { addon: null; reason: string };

let loaded: BlasLoad | null = null;

function disabledByEnv(env: NodeJS.ProcessEnv): boolean {
  const v = env[BLAS_ENV]?.trim().toLowerCase();
  return v === "0" || v === "false" || v === "off";
}

/**
 * Loads the addon once per process (the `RLAIF_BLAS` check included) and sets its thread
 * count. Never throws: a missing or broken addon is a reason, and the caller falls back.
 */
export function loadBlas(env: NodeJS.ProcessEnv = process.env): BlasLoad {
  if (disabledByEnv(env)) return { addon: null, reason: `${BLAS_ENV}=${env[BLAS_ENV]}` };
  if (loaded !== null) return loaded;
  if (!existsSync(ADDON_PATH)) {
    loaded = { addon: null, reason: "addon not built (npm run build:native)" };
    return loaded;
  }
  chooseCoreType(env);
  try {
    const addon = createRequire(import.meta.url)(ADDON_PATH) as BlasAddon;
    if (env.OPENBLAS_NUM_THREADS === undefined) addon.setThreads(DEFAULT_BLAS_THREADS);
    loaded = { addon };
  } catch (err) {
    loaded = { addon: null, reason: `addon failed to load: ${(err as Error).message}` };
  }
  return loaded;
}
