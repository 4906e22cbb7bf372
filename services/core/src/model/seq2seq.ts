/**
 * The seed's Seq2Seq encoder–decoder policy (docs/architecture.md#seq2seq): a GRU encoder reads the prompt x, a GRU
 * decoder with Luong attention over the encoder states generates the completion,
 * π_θ(y_t | x, y_<t). It implements the one `CausalLM` interface, so sampling, scoring, the
 * learner, checkpoints and the Policy service use it like any other kind.
 *
 * Where the prompt ends: `forward` takes it per row from `ForwardOptions.sourceLengths` S_r
 * (default: the whole row); `step` with past = null encodes its tokens, later calls decode.
 * Row r's tokens x_0..x_{S−1} are the source (x_0 = BOS); the decoder reads a GO symbol (BOS)
 * and then x_S, x_{S+1}, …, so its outputs sit at positions S−1, S, …: the logits at position t
 * predict x_{t+1} exactly as for a causal LM, and every consumer's "row t predicts token t + 1"
 * layout holds. Positions t < S − 1 get the encoder head's logits (the encoder is a language
 * model of the prompt, which pre-training also trains), so the model scores whole rows.
 *
 *   encoder  e_t = GRU_enc(E[x_t], e_{t−1}),  e_{−1} = 0,  t < S
 *   decoder  s_j = GRU_dec(E[u_j], s_{j−1}),  s_{−1} = e_{S−1},  u_0 = BOS, u_j = x_{S−1+j}
 *   attention α_j = softmax_i(s_jᵀ W_a e_i) over real source tokens,  c_j = Σ_i α_{j,i} e_i
 *   output   h̃_j = tanh([c_j; s_j] W_c + b_c),  logits_j = h̃_j W_out + b_out
 *
 * Masks m ∈ {0, 1} (the key mask, and t ≥ S for the encoder) gate every state update,
 * h_t ← h_{t−1} + m_t (h' − h_{t−1}), and padded source tokens get score −1e9 (attention weight
 * exactly 0), so left-padded prompts give each row the results it would have alone.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import {
  type CausalLM,
  checkForwardInputs,
  checkStepMask,
  type DecodingState,
  type ForwardOptions,
} from "./causal-lm.js";
import { FUSED, hasFusedKernel, runFused } from "./fused-kernels.js";
import { MASKED } from "./layers.js";
import { ParamModel, type ParamSource } from "./param-model.js";
import type { RecurrentOps as Ops } from "./recurrent-cells.js";
import { RECURRENT_OPS as OPS } from "./recurrent-ops.js";
import type { RowDecoder } from "./row-decoder.js";
import { type Seq2SeqConfig, seq2seqParameterShapes, validateSeq2SeqConfig } from "./seq2seq-config.js";
import { gruStack, type SidePlan } from "./seq2seq-gru.js";
import { StateDecoder, type StateLayout } from "./state-decoder.js";
import { BOS } from "./tokenizer.js";

/** What `step` carries between calls (a type, so it is a TensorContainer). */
export type Seq2SeqState = {
  /** Top encoder layer's states e_i [B, S, H] (the attention's values). */
  memory: tf.Tensor3D;
  /** e_i W_a [B, S, H] (the attention's keys, computed once per prompt). */
  keys: tf.Tensor3D;
  /** [B, 1, S]: 0 for real source tokens, −1e9 for padding. */
  bias: tf.Tensor3D;
  /** Decoder state per layer, each [B, H]. */
  h: tf.Tensor2D[];
};

/** GRU encoder + attentive GRU decoder whose parameters are named `tf.Variable`s. Dispose it when done. */
export class Seq2SeqLM extends ParamModel implements CausalLM {
  readonly kind = "seq2seq" as const;
  /** Validated hyperparameters. */
  readonly config: Seq2SeqConfig;

  /**
   * Creates the parameters from `source`: given weights as they are, or deterministically from a
   * seed (each from its own RNG stream (seed,
   * hash(name)), so every backend gets the same weights). Embedding ~ N(0, 1); GRU matrices
   * ~ U(±1/√H) (PyTorch's GRU init); other matrices ~ U(±1/√fan_in) (PyTorch's Linear); biases 0.
   */
  constructor(config: Seq2SeqConfig, source: ParamSource) {
    const c = validateSeq2SeqConfig(config);
    super("seq2seq", seq2seqParameterShapes(c), source, (name, shape, data, rng) => {
      const gru = name.startsWith("enc.") || name.startsWith("dec.");
      const k = 1 / Math.sqrt(gru ? c.hidden : (shape[0] as number));
      if (name === "wte") for (let i = 0; i < data.length; i++) data[i] = rng.nextNormal();
      else if (shape.length === 2)
        for (let i = 0; i < data.length; i++) data[i] = (2 * rng.nextFloat() - 1) * k;
    });
    this.config = c;
  }

  /**
   * Logits [B, T, V] for int32 tokens [B, T], differentiable. `options.sourceLengths` S_r ∈ [1, T]
   * splits each row into prompt and completion (default T: all prompt, the last position
   * predicts the first completion token); `options.keyMask` [B, T] freezes the states at
   * padding. `positions` are ignored (the recurrences know the order).
   */
  forward(tokens: tf.Tensor2D, _positions?: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    const mask = options.keyMask;
    checkForwardInputs(tokens, mask);
    const [b, t] = tokens.shape;
    const src = options.sourceLengths ?? new Array<number>(b).fill(t);
    if (src.length !== b || src.some((s) => !Number.isInteger(s) || s < 1 || s > t))
      throw new ValidationError("sourceLengths", `must be ${b} integers in [1, ${t}]`);
    const tok = tokens.dataSync();
    const km = mask?.dataSync();
    const real = (r: number, i: number) => (km === undefined ? 1 : Number(km[r * t + i]));
    const sMax = Math.max(...src);
    const dLen = Math.max(...src.map((s) => t - s + 1));
    const rows = [...Array(b).keys()];
    // encoder step i: x_i, real iff i < S_r and unpadded
    const enc: SidePlan = { ids: [], masks: [] };
    for (let i = 0; i < sMax; i++) {
      enc.ids.push(rows.map((r) => (i < (src[r] as number) ? Number(tok[r * t + i]) : BOS)));
      enc.masks.push(rows.map((r) => (i < (src[r] as number) ? real(r, i) : 0)));
    }
    // decoder step j: GO, then x_{S−1+j} (past the row's end: ignored outputs)
    const dec: SidePlan = { ids: [], masks: [] };
    for (let j = 0; j < dLen; j++) {
      const at = rows.map((r) => (src[r] as number) - 1 + j);
      dec.ids.push(
        rows.map((r) => (j > 0 && (at[r] as number) < t ? Number(tok[r * t + (at[r] as number)]) : BOS)),
      );
      dec.masks.push(
        km === undefined || j === 0
          ? null
          : rows.map((r) => ((at[r] as number) < t ? real(r, at[r] as number) : 1)),
      );
    }
    return tf.tidy(() => {
      const ops = OPS[options.ops ?? "train"];
      const { state, encLogits } = this.encode(enc, ops);
      const decoded = this.decode(dec, state, ops); // [B·dLen, V]
      // row r·T + i of the result: encoder logits for i < S_r − 1, else decoder step i − S_r + 1
      const order = Int32Array.from({ length: b * t }, (_, k) => {
        const r = Math.floor(k / t);
        const i = k % t;
        const s = src[r] as number;
        return i < s - 1 ? r * sMax + i : b * sMax + r * dLen + (i - s + 1);
      });
      const all = tf.concat([encLogits, decoded.logits], 0) as tf.Tensor2D; // [B·(sMax + dLen), V]
      const picked = ops.embedding(all, tf.tensor1d(order, "int32")); // [B·T, V]
      return tf.reshape(picked, [b, t, this.config.vocabSize]) as tf.Tensor3D;
    });
  }

  /**
   * Incremental decoding. past = null: `tokens` [B, S] are the (left-padded) prompts; they are
   * encoded and the decoder takes its GO step, so logits[:, S − 1] is the first completion
   * token's distribution (earlier positions: the encoder head's). Later calls decode `tokens`
   * [B, S] from `past`; only the last S columns of `keyMask` [B, P + S] matter. Returns logits
   * [B, S, V] and a new state the caller owns (the old one can be freed independently).
   */
  step(
    tokens: tf.Tensor2D,
    _positions: tf.Tensor2D,
    keyMask: tf.Tensor2D,
    past: DecodingState | null,
  ): { logits: tf.Tensor3D; cache: Seq2SeqState } {
    checkStepMask(tokens, keyMask);
    const [b, s] = tokens.shape;
    const tok = tokens.dataSync();
    const total = keyMask.shape[1];
    const km = keyMask.dataSync();
    const col = (data: ArrayLike<number>, width: number, i: number) =>
      Array.from({ length: b }, (_, r) => Number(data[r * width + i]));
    const cols = [...Array(s).keys()];
    const masks = cols.map((i) => col(km, total, total - s + i));
    const ops = OPS.inference;
    type Out = { logits: tf.Tensor3D; cache: Seq2SeqState };
    return tf.tidy(() => {
      const v = this.config.vocabSize;
      if (past === null) {
        const { state, encLogits } = this.encode({ ids: cols.map((i) => col(tok, s, i)), masks }, ops);
        const go = this.decode({ ids: [new Array<number>(b).fill(BOS)], masks: [null] }, state, ops);
        const encPart = tf.slice(tf.reshape(encLogits, [b, s, v]), [0, 0, 0], [b, s - 1, v]);
        const logits = tf.concat([encPart, tf.reshape(go.logits, [b, 1, v])], 1) as tf.Tensor3D; // [B, S, V]
        return { logits, cache: go.state } as unknown as tf.TensorContainer;
      }
      const prev = past as Seq2SeqState;
      const from = {
        ...prev,
        memory: tf.clone(prev.memory),
        keys: tf.clone(prev.keys),
        bias: tf.clone(prev.bias),
      };
      const out = this.decode({ ids: cols.map((i) => col(tok, s, i)), masks }, from, ops);
      return { logits: tf.reshape(out.logits, [b, s, v]), cache: out.state } as unknown as tf.TensorContainer;
    }) as unknown as Out;
  }

  /**
   * A decoder of up to `capacity` rows keeping each row's encoded prompt (memory, keys, mask bias,
   * right-aligned to contextLength positions) and decoder state. Only prompts of one length share
   * a prefill: the encoder's masked update differs in its last bit from the unmasked one, and the
   * GO step's attention width is the prompt's, so padding would change a row.
   */
  decoder(capacity: number): RowDecoder {
    const { hidden: h, nLayers, contextLength: w } = this.config;
    const layout: StateLayout = {
      fields: [
        { rowShape: [w, h], perPosition: true, fill: 0 },
        { rowShape: [w, h], perPosition: true, fill: 0 },
        { rowShape: [w], perPosition: true, fill: MASKED },
        ...Array.from({ length: nLayers }, () => ({ rowShape: [h], perPosition: false, fill: 0 })),
      ],
      toTensors: (state) => {
        const s = state as Seq2SeqState;
        const [b, , len] = s.bias.shape;
        return [s.memory, s.keys, tf.reshape(s.bias, [b, len]), ...s.h];
      },
      fromTensors: ([memory, keys, bias, ...hs]) => {
        const b = (bias as tf.Tensor).shape[0] as number;
        return {
          memory: memory as tf.Tensor3D,
          keys: keys as tf.Tensor3D,
          bias: tf.reshape(bias as tf.Tensor, [b, 1, w]) as tf.Tensor3D,
          h: hs as tf.Tensor2D[],
        } satisfies Seq2SeqState;
      },
      prefillKey: (length) => length,
    };
    return new StateDecoder(this, layout, capacity);
  }

  /**
   * Runs the encoder over the plan's steps; returns the decoder's starting state (memory, keys,
   * mask bias, final encoder states) and the encoder head's logits [B·S, V] (row r·S + i predicts
   * x_{i+1}).
   */
  private encode(plan: SidePlan, ops: Ops): { state: Seq2SeqState; encLogits: tf.Tensor2D } {
    const { hidden: h } = this.config;
    const b = plan.ids[0]?.length ?? 0;
    const s = plan.ids.length;
    const { outs, last } = gruStack(this.params, this.config, "enc", plan, null, ops);
    const memory = tf.stack(outs, 1) as tf.Tensor3D; // [B, S, H]
    const flat = tf.reshape(memory, [b * s, h]) as tf.Tensor2D; // [B·S, H]
    // k_i = e_i W_a
    const keys = tf.reshape(ops.matmul(flat, this.p("attn.weight")), [b, s, h]) as tf.Tensor3D; // [B, S, H]
    const bias = tf.tensor3d(
      Array.from({ length: b }, (_, r) =>
        plan.masks.map((m) => (m === null || m[r] === 1 ? 0 : MASKED)),
      ).flat(),
      [b, 1, s],
    ); // [B, 1, S]
    const encLogits = ops.linear(flat, this.p("enc_head.weight"), this.p("enc_head.bias")); // [B·S, V]
    return { state: { memory, keys, bias, h: last }, encLogits };
  }

  /**
   * c_j = Σ_i α_{j,i} e_i with α = softmax_i(s_jᵀ W_a e_i + bias_i) for decoder states d [B, J, H]:
   * one fused kernel when no gradient is needed and the backend has it (fused-kernels.ts), else
   * tfjs ops.
   */
  private attend(d: tf.Tensor3D, state: Seq2SeqState, ops: Ops): tf.Tensor3D {
    if (ops === OPS.inference && hasFusedKernel(FUSED.attend)) {
      const { keys, memory: values, bias } = state;
      return runFused<tf.Tensor3D>(FUSED.attend, { q: d, keys, values, bias });
    }
    // scores_{j,i} = s_jᵀ W_a e_i (+ −1e9 at padded sources);  α = softmax_i
    const alpha = tf.softmax(tf.add(ops.matmulNT(d, state.keys), state.bias)); // [B, J, S]
    // c_j = Σ_i α_{j,i} e_i
    return ops.matmul(alpha, state.memory) as tf.Tensor3D; // [B, J, H]
  }

  /** Runs the decoder from `state` over the plan; logits [B·J, V] (row r·J + j) and the new state. */
  private decode(
    plan: SidePlan,
    state: Seq2SeqState,
    ops: Ops,
  ): { logits: tf.Tensor2D; state: Seq2SeqState } {
    const { hidden: h } = this.config;
    const b = plan.ids[0]?.length ?? 0;
    const j = plan.ids.length;
    const { outs, last } = gruStack(this.params, this.config, "dec", plan, state.h, ops);
    const d = (j === 1 ? tf.reshape(outs[0] as tf.Tensor2D, [b, 1, h]) : tf.stack(outs, 1)) as tf.Tensor3D; // [B, J, H]
    const ctx = this.attend(d, state, ops); // [B, J, H]
    const both = tf.concat([tf.reshape(ctx, [b * j, h]), tf.reshape(d, [b * j, h])], 1) as tf.Tensor2D; // [B·J, 2H]
    // h̃ = tanh([c; s] W_c + b_c)
    const ht = ops.tanh(ops.linear(both, this.p("attn.combine.weight"), this.p("attn.combine.bias"))); // [B·J, H]
    const logits = ops.linear(ht, this.p("lm_head.weight"), this.p("lm_head.bias")); // [B·J, V]
    return { logits, state: { ...state, h: last } };
  }
}
