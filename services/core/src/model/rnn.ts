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
 * Speed on wasm: per-step inputs are built from JS arrays, not slices of a tensor; products use
 * layers.ts's `matmul`/`linear` (gradients with explicit transposes, no transposeA/B flags); the
 * cells and their tanh = 2σ(2x) − 1 come from recurrent-cells.ts, shared with the Seq2Seq model.
 */
import * as tf from "@tensorflow/tfjs";
import {
  type CausalLM,
  checkForwardInputs,
  checkStepMask,
  type DecodingState,
  type ForwardOptions,
} from "./causal-lm.js";
import { ParamModel, type ParamSource } from "./param-model.js";
import {
  gruCell,
  lstmCell,
  maskedUpdate,
  RECURRENT_OPS as OPS,
  type RecurrentOps,
} from "./recurrent-cells.js";
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
    // Per-step inputs are built from JS arrays: slicing a [B, T, ·] tensor per step costs ~1 ms
    // per slice on wasm, more than the step's arithmetic.
    const tok = tokens.dataSync();
    const maskData = keyMask === null ? null : keyMask.dataSync();
    const column = (data: ArrayLike<number>, i: number) =>
      Array.from({ length: b }, (_, r) => Number(data[r * t + i]));
    // x_t = E[tokens[:, t]]
    let xs: tf.Tensor2D[] = Array.from({ length: t }, (_, i) =>
      ops.embedding(this.p("wte"), tf.tensor1d(column(tok, i), "int32")),
    ); // T × [B, D]
    // m_t, one [B, 1] column per step (absent: every position is real)
    const masks =
      maskData === null
        ? null
        : Array.from({ length: t }, (_, i) => tf.tensor2d(column(maskData, i), [b, 1], "float32")); // T × [B, 1]
    const state: RecurrentState = { h: [], c: [] };
    for (let l = 0; l < nLayers; l++) {
      const wIh = this.p<tf.Tensor2D>(`h.${l}.weight_ih`); // [in, G·H]
      const bIh = this.p<tf.Tensor1D>(`h.${l}.bias_ih`); // [G·H]
      const wHh = this.p<tf.Tensor2D>(`h.${l}.weight_hh`); // [H, G·H]
      const bHh = this.p<tf.Tensor1D>(`h.${l}.bias_hh`); // [G·H]
      let hPrev = past?.h[l] ?? (tf.zeros([b, h]) as tf.Tensor2D); // [B, H]
      let cPrev = kind === "lstm" ? (past?.c[l] ?? (tf.zeros([b, h]) as tf.Tensor2D)) : null; // [B, H]
      const outs: tf.Tensor2D[] = [];
      for (let i = 0; i < t; i++) {
        // a_t = x_t W_ih + b_ih
        const a = ops.linear(xs[i] as tf.Tensor2D, wIh, bIh); // [B, G·H]
        // u_t = h_{t−1} W_hh + b_hh
        const u = ops.linear(hPrev, wHh, bHh); // [B, G·H]
        let hNew: tf.Tensor2D;
        let cNew: tf.Tensor2D | null = null;
        if (kind === "gru") {
          hNew = gruCell(a, u, hPrev, ops.tanh); // [B, H]
        } else {
          const next = lstmCell(a, u, cPrev as tf.Tensor2D, ops.tanh); // [B, H] each
          hNew = next.h;
          cNew = next.c;
        }
        const m = masks?.[i];
        if (m !== undefined) {
          // h_t = h_{t−1} + m_t (h' − h_{t−1})   (m_t = 0: padding leaves the state unchanged)
          hNew = maskedUpdate(hPrev, hNew, m); // [B, H]
          // c_t = c_{t−1} + m_t (c' − c_{t−1})
          if (cNew !== null) cNew = maskedUpdate(cPrev as tf.Tensor2D, cNew, m); // [B, H]
        }
        outs.push(hNew);
        hPrev = hNew;
        cPrev = cNew;
      }
      state.h.push(hPrev);
      if (cPrev !== null) state.c.push(cPrev);
      // the next layer (or the head) reads every step's h
      xs = outs;
    }
    // Rows of every step's h in batch-major order (row r·T + i = h_i of row r), by a row gather:
    // a Transpose of [T, B, ·] costs tens of ms on wasm, a gather about one.
    const timeMajor = tf.reshape(tf.stack(xs, 0), [t * b, h]) as tf.Tensor2D; // [T*B, H]
    const order = Int32Array.from({ length: b * t }, (_, k) => (k % t) * b + Math.floor(k / t));
    const hs = t === 1 ? timeMajor : ops.embedding(timeMajor, tf.tensor1d(order, "int32")); // [B*T, H]
    // logits = h W_head + b_head, for all steps at once
    const logits = ops.linear(hs, this.p("lm_head.weight"), this.p("lm_head.bias")); // [B*T, V]
    return { logits: tf.reshape(logits, [b, t, v]) as tf.Tensor3D, cache: state };
  }
}

/** A fresh GRU/LSTM model from `config` and `seed` (see `RnnLM`'s constructor for the init). */
export function createRnn(config: RnnConfig, seed: number): RnnLM {
  return new RnnLM(config, seed);
}
