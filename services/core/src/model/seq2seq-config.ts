/**
 * Seq2Seq encoder–decoder (docs/architecture.md#seq2seq) hyperparameters and the parameter layout they imply.
 * TensorFlow.js-free, like transformer-config.ts and rnn-config.ts, so checkpoints and CLIs can validate
 * without a backend.
 */
import { validateConfigFields } from "./config-fields.js";
import { VOCAB_SIZE } from "./tokenizer.js";

/** Shape of the encoder–decoder policy. Stored in checkpoints. */
export interface Seq2SeqConfig {
  /** Always "seq2seq" (the config names its own kind, like an RnnConfig). */
  kind: "seq2seq";
  /** Token ids covered by the shared embedding and both output heads (258 for bytes). */
  vocabSize: number;
  /** Longest row (BOS + prompt + completion) generation may build, as for the other kinds. */
  contextLength: number;
  /** Width of the token embedding shared by encoder and decoder. */
  dModel: number;
  /**
   * Width of every GRU state, encoder and decoder alike (the decoder starts from the encoder's
   * final states), and of the attention's combined output.
   */
  hidden: number;
  /** Stacked GRU layers in the encoder and, as many, in the decoder. */
  nLayers: number;
}

/**
 * The shipped default: one GRU layer of 192 units each side over a 64-wide embedding
 * (~0.52M parameters): the GRU policy's quality with the checkpoint near 2 MB.
 */
export const DEFAULT_SEQ2SEQ_CONFIG: Seq2SeqConfig = {
  kind: "seq2seq",
  vocabSize: VOCAB_SIZE,
  contextLength: 64,
  dModel: 64,
  hidden: 192,
  nLayers: 1,
};

const FIELDS = ["vocabSize", "contextLength", "dModel", "hidden", "nLayers"] as const;

/** Checks an untrusted seq2seq config; throws ValidationError naming the field. */
export function validateSeq2SeqConfig(value: unknown): Seq2SeqConfig {
  return validateConfigFields(value, FIELDS, ["seq2seq"] as const);
}

/**
 * Parameter names and shapes, matrices stored [in, out]. `wte` [V, D] is shared; per side
 * s ∈ {enc, dec} and layer l: `{s}.{l}.weight_ih` [in, 3H], `{s}.{l}.weight_hh` [H, 3H] and
 * biases [3H], gate blocks [r | z | n] as in rnn-config.ts (PyTorch's GRU, transposed). Luong
 * attention: `attn.weight` [H, H] (score sᵀ W e), `attn.combine.weight` [2H, H] and bias [H]
 * (h̃ = tanh([c; s] W_c + b_c)). Heads [H, V] + [V]: `enc_head` (next source token, so the
 * encoder is a language model of the prompt) and `lm_head` (next completion token, from h̃).
 */
export function seq2seqParameterShapes(config: Seq2SeqConfig): Map<string, number[]> {
  const { vocabSize: v, dModel: d, hidden: h, nLayers } = config;
  const shapes = new Map<string, number[]>([["wte", [v, d]]]);
  for (const side of ["enc", "dec"]) {
    for (let l = 0; l < nLayers; l++) {
      shapes.set(`${side}.${l}.weight_ih`, [l === 0 ? d : h, 3 * h]);
      shapes.set(`${side}.${l}.weight_hh`, [h, 3 * h]);
      shapes.set(`${side}.${l}.bias_ih`, [3 * h]);
      shapes.set(`${side}.${l}.bias_hh`, [3 * h]);
    }
  }
  shapes.set("attn.weight", [h, h]);
  shapes.set("attn.combine.weight", [2 * h, h]);
  shapes.set("attn.combine.bias", [h]);
  shapes.set("enc_head.weight", [h, v]);
  shapes.set("enc_head.bias", [v]);
  shapes.set("lm_head.weight", [h, v]);
  shapes.set("lm_head.bias", [v]);
  return shapes;
}
