/**
 * The recurrent half of the Seq2Seq policy (seq2seq.ts): a stack of GRU layers run over one
 * side's steps (the encoder over the prompt, the decoder over GO and the completion), and the
 * three flavours of primitives every pass is built from.
 *
 * Speed on wasm (as in rnn.ts): the embeddings and input projections x_t W_ih of all steps are
 * one lookup and one product; only h_{t−1} W_hh is sequential; tanh is 2σ(2x) − 1 because
 * sigmoid is a much faster kernel than tanh on wasm (same function, to float rounding).
 */
import * as tf from "@tensorflow/tfjs";
import type { ForwardOptions } from "./causal-lm.js";
import * as L from "./layers.js";
import type { Seq2SeqConfig } from "./seq2seq-config.js";

/** The primitives one pass uses (custom-gradient, inference or stock-autodiff flavours). */
export interface Seq2SeqOps {
  linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D;
  embedding(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D;
  tanh<T extends tf.Tensor>(x: T): T;
  matmul<T extends tf.Tensor>(a: T, b: tf.Tensor): T;
  matmulNT<T extends tf.Tensor>(a: T, b: tf.Tensor): T;
}

/** tanh(x) = 2σ(2x) − 1 (sigmoid is a fast kernel on wasm, tanh a slow one). */
function sigmoidTanh<T extends tf.Tensor>(x: T): T {
  return tf.sub(tf.mul(tf.sigmoid(tf.mul(x, 2)), 2), 1) as T;
}

/** `train`: custom gradients (layers.ts); `inference`: fused kernels; `reference`: stock autodiff. */
export const SEQ2SEQ_OPS: Record<NonNullable<ForwardOptions["ops"]>, Seq2SeqOps> = {
  train: { ...L.TRAIN_OPS, tanh: sigmoidTanh },
  inference: { ...L.INFERENCE_OPS, tanh: sigmoidTanh },
  reference: { ...L.REFERENCE_OPS, tanh: tf.tanh },
};

/**
 * One side's input, time-major: per step the rows' token ids and update masks m ∈ {0, 1}
 * (null: every row real). Plain arrays, because per-step slices of a tensor cost more on wasm
 * than the step's arithmetic.
 */
export interface SidePlan {
  ids: number[][];
  masks: (number[] | null)[];
}

/**
 * Runs the `side` ("enc" | "dec") GRU layers over the plan's steps from `init` (zeros when
 * null): returns the top layer's state after every step (steps × [B, H]) and every layer's final
 * state (nLayers × [B, H]). A masked step leaves a row's state as it was. Call inside tf.tidy.
 */
export function gruStack(
  params: ReadonlyMap<string, tf.Variable>,
  config: Seq2SeqConfig,
  side: "enc" | "dec",
  plan: SidePlan,
  init: readonly tf.Tensor2D[] | null,
  ops: Seq2SeqOps,
): { outs: tf.Tensor2D[]; last: tf.Tensor2D[] } {
  const p = <T extends tf.Tensor>(name: string) => params.get(name) as unknown as T;
  const { hidden: h, nLayers } = config;
  const steps = plan.ids.length;
  const b = plan.ids[0]?.length ?? 0;
  // m_t [B, 1] per step (null: all rows real, no kernels spent)
  const masks = plan.masks.map((m) =>
    m === null || m.every((x) => x === 1) ? null : tf.tensor2d(m, [b, 1], "float32"),
  );
  // x_t = E[ids_t] for all steps at once, row t·B + r
  let input = ops.embedding(p("wte"), tf.tensor1d(plan.ids.flat(), "int32")); // [steps·B, D]
  const last: tf.Tensor2D[] = [];
  let outs: tf.Tensor2D[] = [];
  for (let l = 0; l < nLayers; l++) {
    const wHh = p<tf.Tensor2D>(`${side}.${l}.weight_hh`); // [H, 3H]
    const bHh = p<tf.Tensor1D>(`${side}.${l}.bias_hh`); // [3H]
    // a_t = x_t W_ih + b_ih, every step in one product
    const a = ops.linear(input, p(`${side}.${l}.weight_ih`), p(`${side}.${l}.bias_ih`)); // [steps·B, 3H]
    const as = steps === 1 ? [a] : (tf.split(a, steps, 0) as tf.Tensor2D[]); // steps × [B, 3H]
    let hPrev = init?.[l] ?? (tf.zeros([b, h]) as tf.Tensor2D); // [B, H]
    outs = [];
    for (let i = 0; i < steps; i++) {
      // u_t = h_{t−1} W_hh + b_hh
      const u = ops.linear(hPrev, wHh, bHh); // [B, 3H]
      const [aRz, aN] = tf.split(as[i] as tf.Tensor2D, [2 * h, h], 1) as [tf.Tensor2D, tf.Tensor2D];
      const [uRz, uN] = tf.split(u, [2 * h, h], 1) as [tf.Tensor2D, tf.Tensor2D];
      // [r, z] = σ(a_rz + u_rz)
      const [r, z] = tf.split(tf.sigmoid(tf.add(aRz, uRz)), 2, 1) as [tf.Tensor2D, tf.Tensor2D]; // [B, H] each
      // n = tanh(a_n + r ⊙ u_n)
      const n = ops.tanh(tf.add(aN, tf.mul(r, uN))) as tf.Tensor2D; // [B, H]
      // h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)
      let hNew = tf.add(n, tf.mul(z, tf.sub(hPrev, n))) as tf.Tensor2D; // [B, H]
      const m = masks[i];
      // h_t = h_{t−1} + m_t (h' − h_{t−1})
      if (m) hNew = tf.add(hPrev, tf.mul(m, tf.sub(hNew, hPrev))) as tf.Tensor2D; // [B, H]
      outs.push(hNew);
      hPrev = hNew;
    }
    last.push(hPrev);
    // the next layer reads every step's h
    input = steps === 1 ? hPrev : (tf.concat(outs, 0) as tf.Tensor2D); // [steps·B, H]
  }
  return { outs, last };
}
