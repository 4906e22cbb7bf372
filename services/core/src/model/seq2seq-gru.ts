/**
 * The recurrent half of the Seq2Seq policy (seq2seq.ts): a stack of GRU layers run over one
 * side's steps (the encoder over the prompt, the decoder over GO and the completion).
 *
 * Speed on wasm (as in rnn.ts): the embeddings and input projections x_t W_ih of all steps are
 * one lookup and one product; only h_{t−1} W_hh is sequential. The cell, the masked update and the
 * primitives come from recurrent-cells.ts, shared with the recurrent LM.
 */
import * as tf from "@tensorflow/tfjs";
import { gruCell, maskedUpdate, type RecurrentOps } from "./recurrent-cells.js";
import type { Seq2SeqConfig } from "./seq2seq-config.js";

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
  ops: RecurrentOps,
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
      let hNew = gruCell(as[i] as tf.Tensor2D, u, hPrev, ops.tanh); // [B, H]
      const m = masks[i];
      // h_t = h_{t−1} + m_t (h' − h_{t−1})
      if (m) hNew = maskedUpdate(hPrev, hNew, m); // [B, H]
      outs.push(hNew);
      hPrev = hNew;
    }
    last.push(hPrev);
    // the next layer reads every step's h
    input = steps === 1 ? hPrev : (tf.concat(outs, 0) as tf.Tensor2D); // [steps·B, H]
  }
  return { outs, last };
}
