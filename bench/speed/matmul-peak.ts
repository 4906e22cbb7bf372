/**
 * Matrix-product speed, measured in the same run as everything else: the machine's practical
 * peak as PyTorch's 2048³ float32 product at each thread count (large enough that OpenBLAS sgemm
 * runs at its best; the learner's effective GFLOP/s are judged against it), and products at a
 * model's own shape on both sides (what the kernels actually see).
 */
import * as tf from "@tensorflow/tfjs";
import { alternate, medians, type Rounds, type Timed } from "./alternate.js";
import type { BySide } from "./kind-bench.js";
import type { TorchWorker } from "./torch-worker.js";

/** [m, k, n]: an [m, k] × [k, n] product. */
export type MatmulShape = readonly [number, number, number];

/** GFLOP/s of the product per side (`torch1`, `torch2`, … and, with `rlaif`, tfjs on its backend). */
export async function measureMatmul(
  torch: TorchWorker,
  threads: readonly number[],
  shape: MatmulShape,
  rounds: Rounds,
  rlaif: boolean,
): Promise<BySide> {
  const [m, k, n] = shape;
  const [a, b] = rlaif ? [tf.randomNormal([m, k]), tf.randomNormal([k, n])] : [null, null];
  const sides: Record<string, Timed> = Object.fromEntries(
    threads.map((t) => [
      `torch${t}`,
      async () => (await torch.call<{ ms: number }>("sgemm", { shape, threads: t })).ms,
    ]),
  );
  if (a && b) {
    sides.rlaif = async () => {
      const start = performance.now();
      tf.tidy(() => tf.matMul(a, b).dataSync());
      return performance.now() - start;
    };
  }
  try {
    const times = medians(await alternate(sides, rounds));
    return Object.fromEntries(
      Object.entries(times).map(([side, ms]) => [side, (2 * m * k * n) / (ms / 1000) / 1e9]),
    );
  } finally {
    tf.dispose([a, b].filter((x) => x !== null));
  }
}
