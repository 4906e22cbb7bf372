/**
 * The recurrent half of the Seq2Seq policy (seq2seq.ts): a stack of GRU layers run over one
 * side's steps (the encoder over the prompt, the decoder over GO and the completion).
 *
 * Speed (as in rnn.ts): the embeddings and input projections x_t W_ih of all steps are one lookup
 * and one product; each layer's recurrence is one op with its backpropagation through time
 * written out (gru-layer.ts, through `ops.gruLayer`), shared with the recurrent LM.
 */
import * as tf from "@tensorflow/tfjs";
import type { RecurrentOps } from "./recurrent-cells.js";
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
  // m_t for every step, row t·B + r (null: all rows real, no kernels spent)
  const real = plan.masks.every((m) => m === null || m.every((x) => x === 1));
  const mask = real
    ? null
    : tf.tensor2d(
        plan.masks.flatMap((m) => m ?? Array<number>(b).fill(1)),
        [steps * b, 1],
        "float32",
      ); // [steps·B, 1]
  // x_t = E[ids_t] for all steps at once, row t·B + r
  let input = ops.embedding(p("wte"), tf.tensor1d(plan.ids.flat(), "int32")); // [steps·B, D]
  const last: tf.Tensor2D[] = [];
  for (let l = 0; l < nLayers; l++) {
    // a_t = x_t W_ih + b_ih, every step in one product
    const a = ops.linear(input, p(`${side}.${l}.weight_ih`), p(`${side}.${l}.bias_ih`)); // [steps·B, 3H]
    const h0 = init?.[l] ?? (tf.zeros([b, h]) as tf.Tensor2D); // [B, H]
    // h_t for every step, the whole recurrence as one op (gru-layer.ts)
    input = ops.gruLayer(a, p(`${side}.${l}.weight_hh`), p(`${side}.${l}.bias_hh`), h0, mask); // [steps·B, H]
    last.push(steps === 1 ? input : (tf.slice(input, [(steps - 1) * b, 0], [b, h]) as tf.Tensor2D)); // [B, H]
  }
  // the top layer's state after every step
  const outs = steps === 1 ? [input] : (tf.split(input, steps, 0) as tf.Tensor2D[]); // steps × [B, H]
  return { outs, last };
}
