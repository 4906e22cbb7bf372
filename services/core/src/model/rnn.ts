/**
 * The seed's recurrent language model on TensorFlow.js: byte embedding → nLayers stacked GRU or
 * LSTM cells → linear head, with recurrent-state sampling.
 *
 * One code path serves training (the full sequence unrolled over T, differentiable; right padding
 * is harmless because step t only reads tokens ≤ t) and incremental decoding (`step` carries the
 * per-layer states h, c between calls). A key mask m_t ∈ {0, 1} gates every state update,
 * h_t ← h_{t−1} + m_t (h̃_t − h_{t−1}), so a padded position leaves the state exactly as it was:
 * a left-padded prompt row gives the same logits as the row alone.
 *
 * Speed: rows are time-major, so the embeddings and input projections x_t W_ih of all steps are
 * one lookup and one product and each step is a contiguous block; a GRU or LSTM layer is one op
 * with its backpropagation through time written out (gru-layer.ts, lstm-layer.ts); the cells and their tanh = 2σ(2x) − 1
 * come from recurrent-cells.ts, shared with the Seq2Seq model.
 */
import * as tf from "@tensorflow/tfjs";
import {
  type CausalLM,
  checkForwardInputs,
  checkStepMask,
  type DecodingState,
  type ForwardOptions,
} from "./causal-lm.js";
import { lstmOutputs } from "./lstm-layer.js";
import { ParamModel, type ParamSource } from "./param-model.js";
import type { RecurrentOps } from "./recurrent-cells.js";
import { RECURRENT_OPS as OPS } from "./recurrent-ops.js";
import { type RnnConfig, rnnParameterShapes, validateRnnConfig } from "./rnn-config.js";
import type { RowDecoder } from "./row-decoder.js";
import { StateDecoder, type StateLayout } from "./state-decoder.js";

/** Per-layer recurrent state, each [B, H]; `c` is empty for a GRU. (A type, so it is a TensorContainer.) */
export type RecurrentState = {
  h: tf.Tensor2D[];
  c: tf.Tensor2D[];
};

/** A GRU or LSTM language model whose parameters are named `tf.Variable`s. Dispose it when done. */
export class RnnLM extends ParamModel implements CausalLM {
  /** Validated hyperparameters (`config.kind` is the cell family). */
  readonly config: RnnConfig;

  /**
   * Creates the parameters from `source`: given weights (a checkpoint's) as they are, or a seed,
   * deterministically: each parameter draws from its own RNG stream (seed, hash(name)), so the
   * same seed gives the same weights on every backend.
   * Embedding ~ N(0, 1); recurrent, input and head matrices ~ U(−1/√H, 1/√H) (PyTorch's RNN
   * init); biases 0, except the LSTM forget-gate block of `bias_ih`, which starts at 1 so the
   * cell remembers by default early in training.
   */
  constructor(config: RnnConfig, source: ParamSource) {
    const c = validateRnnConfig(config);
    const h = c.hidden;
    const k = 1 / Math.sqrt(h);
    super(c.kind, rnnParameterShapes(c), source, (name, _shape, data, rng) => {
      if (name === "wte") {
        for (let i = 0; i < data.length; i++) data[i] = rng.nextNormal();
      } else if (name.includes("bias")) {
        // f block of the LSTM's [i, f, g, o] bias
        if (c.kind === "lstm" && name.endsWith("bias_ih")) data.fill(1, h, 2 * h);
      } else {
        for (let i = 0; i < data.length; i++) data[i] = (2 * rng.nextFloat() - 1) * k;
      }
    });
    this.config = c;
  }

  /** `gru` or `lstm`. */
  get kind(): RnnConfig["kind"] {
    return this.config.kind;
  }

  /**
   * Logits [B, T, V] for int32 tokens [B, T], differentiable. `positions` are ignored (the
   * recurrence knows the order); `options.keyMask` [B, T] freezes the state at padding.
   */
  forward(tokens: tf.Tensor2D, _positions?: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    const mask = options.keyMask ?? null;
    checkForwardInputs(tokens, mask);
    return tf.tidy(() => this.run(tokens, mask, null, OPS[options.ops ?? "train"]).logits);
  }

  /**
   * Incremental decoding: runs the S new tokens from the `past` state (zeros when null).
   * `keyMask` [B, P + S]: only its last S columns matter (the prefix is already in the state).
   * Returns logits [B, S, V] and the state after the S tokens; the caller frees the old state.
   */
  step(
    tokens: tf.Tensor2D,
    _positions: tf.Tensor2D,
    keyMask: tf.Tensor2D,
    past: DecodingState | null,
  ): { logits: tf.Tensor3D; cache: RecurrentState } {
    checkStepMask(tokens, keyMask);
    const [b, s] = tokens.shape;
    type Out = { logits: tf.Tensor3D; cache: RecurrentState };
    // tidy keeps every tensor reachable from the returned object (logits and the new state).
    return tf.tidy(() => {
      const total = keyMask.shape[1];
      const mask = keyMask.slice([0, total - s], [b, s]) as tf.Tensor2D; // [B, S]
      return this.run(
        tokens,
        mask,
        past as RecurrentState | null,
        OPS.inference,
      ) as unknown as tf.TensorContainer;
    }) as unknown as Out;
  }

  /**
   * A decoder of up to `capacity` rows keeping each row's h (and c) per layer. Any prompts may
   * share a prefill: left padding is masked, and a masked step leaves the state exactly as it was.
   */
  decoder(capacity: number): RowDecoder {
    const { hidden, nLayers, kind } = this.config;
    const states = kind === "lstm" ? 2 * nLayers : nLayers;
    const layout: StateLayout = {
      fields: Array.from({ length: states }, () => ({ rowShape: [hidden], perPosition: false, fill: 0 })),
      toTensors: (state) => [...(state as RecurrentState).h, ...(state as RecurrentState).c],
      fromTensors: (ts) => ({ h: ts.slice(0, nLayers), c: ts.slice(nLayers) }) as RecurrentState,
      prefillKey: () => 0,
    };
    return new StateDecoder(this, layout, capacity);
  }

  /** Unrolls every layer over the sequence; see the module doc for the masking rule. */
  private run(
    tokens: tf.Tensor2D,
    keyMask: tf.Tensor2D | null,
    past: RecurrentState | null,
    ops: RecurrentOps,
  ): { logits: tf.Tensor3D; cache: RecurrentState } {
    const { hidden: h, vocabSize: v, nLayers, kind } = this.config;
    const [b, t] = tokens.shape;
    // Rows are time-major (row i·B + r is step i of row r), so each step is one contiguous block.
    const timeMajor = (data: ArrayLike<number>) =>
      Array.from({ length: t * b }, (_, k) => Number(data[(k % b) * t + Math.floor(k / b)]));
    // x_t = E[tokens[:, t]] for every step at once
    let xs = ops.embedding(this.p("wte"), tf.tensor1d(timeMajor(tokens.dataSync()), "int32")); // [T·B, D]
    // m_t for every step (absent: every position is real)
    const mask = keyMask === null ? null : tf.tensor2d(timeMajor(keyMask.dataSync()), [t * b, 1], "float32"); // [T·B, 1]
    const state: RecurrentState = { h: [], c: [] };
    for (let l = 0; l < nLayers; l++) {
      const wHh = this.p<tf.Tensor2D>(`h.${l}.weight_hh`); // [H, G·H]
      const bHh = this.p<tf.Tensor1D>(`h.${l}.bias_hh`); // [G·H]
      const h0 = past?.h[l] ?? (tf.zeros([b, h]) as tf.Tensor2D); // [B, H]
      // a_t = x_t W_ih + b_ih, every step in one product
      const a = ops.linear(xs, this.p(`h.${l}.weight_ih`), this.p(`h.${l}.bias_ih`)); // [T·B, G·H]
      if (kind === "gru") {
        // the whole recurrence as one op (gru-layer.ts)
        xs = ops.gruLayer(a, wHh, bHh, h0, mask); // [T·B, H]
        state.h.push(t === 1 ? xs : (tf.slice(xs, [(t - 1) * b, 0], [b, h]) as tf.Tensor2D)); // [B, H]
      } else {
        // the whole recurrence as one op (lstm-layer.ts): every h_t, then the final c
        const c0 = past?.c[l] ?? (tf.zeros([b, h]) as tf.Tensor2D); // [B, H]
        const last = lstmOutputs(ops.lstmLayer(a, wHh, bHh, h0, c0, mask), b);
        xs = last.hs; // [T·B, H]
        state.h.push(last.h);
        state.c.push(last.c);
      }
    }
    // Rows of every step's h in batch-major order (row r·T + i = h_i of row r), by a row gather:
    // a Transpose of [T, B, ·] costs tens of ms on wasm, a gather about one.
    const order = Int32Array.from({ length: b * t }, (_, k) => (k % t) * b + Math.floor(k / t));
    const hs = t === 1 ? xs : ops.embedding(xs, tf.tensor1d(order, "int32")); // [B*T, H]
    // logits = h W_head + b_head, for all steps at once
    const logits = ops.linear(hs, this.p("lm_head.weight"), this.p("lm_head.bias")); // [B*T, V]
    return { logits: tf.reshape(logits, [b, t, v]) as tf.Tensor3D, cache: state };
  }
}

/** A fresh GRU/LSTM model from `config` and `seed` (see `RnnLM`'s constructor for the init). */
export function createRnn(config: RnnConfig, seed: number): RnnLM {
  return new RnnLM(config, seed);
}
