/**
 * Matrix-product speed, measured in the same run as everything else: the machine's practical
 * peak as PyTorch's 2048³ float32 product at each thread count (large enough that OpenBLAS sgemm
 * runs at its best; the learner's effective GFLOP/s are judged against it), and products at a
 * model's own shape on both sides (what the kernels actually see). The peak is the best round,
 * not the median: load from elsewhere only ever slows a product down, and on a shared machine
 * the median of a 2-thread product can fall below the 1-thread one.
 */
import * as tf from "@tensorflow/tfjs";
import { alternate, best, medians, type Rounds, type Timed } from "./alternate.js";
import type { BySide } from "./kind-bench.js";
import type { TorchWorker } from "./torch-worker.js";

/** [m, k, n]: an [m, k] × [k, n] product. */
export type MatmulShape = readonly [number, number, number];

/** Which rounds a matmul figure reports: the median, or the best (a peak). */
export type Reduce = "median" | "best";

/**
 * GFLOP/s of the product per side (`torch1`, `torch2`, … and, with `rlaif`, tfjs on its
 * backend), over the rounds' median or best time.
 */
export async function measureMatmul(
  torch: TorchWorker,
  threads: readonly number[],
  shape: MatmulShape,
  rounds: Rounds,
  opts: { rlaif: boolean; reduce: Reduce },
): Promise<BySide> {
  const [m, k, n] = shape;
  const [a, b] = opts.rlaif ? [tf.randomNormal([m, k]), tf.randomNormal([k, n])] : [null, null];
  const sides: Record<string, Timed> = Object.fromEntries(
    threads.map((t) => [
      `torch${t}`,
      async () => (await torch.call<{ ms: number }>("sgemm", { shape, threads: t })).ms,
    ]),
  );
  if (a && b) {
    sides.rlaif = async () => {
      // The product alone, as PyTorch's `a @ b`: the backends rlaif runs on (wasm, cpu,
      // tensorflow) compute it before matMul returns, and reading it back (dataSync: 5.9 MB at the
      // MLP's shape) is a copy PyTorch's side never makes.
      const start = performance.now();
      const y = tf.matMul(a, b);
      const ms = performance.now() - start;
      y.dispose();
      return ms;
    };
  }
  try {
    const kept = await alternate(sides, rounds);
    const times = opts.reduce === "best" ? best(kept) : medians(kept);
    return Object.fromEntries(
      Object.entries(times).map(([side, ms]) => [side, (2 * m * k * n) / (ms / 1000) / 1e9]),
    );
  } finally {
    tf.dispose([a, b].filter((x) => x !== null));
  }
}
