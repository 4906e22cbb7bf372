/**
 * Recurrent language model (GRU / LSTM) hyperparameters and the parameter layout they imply.
 * TensorFlow.js-free, like transformer-config.ts, so checkpoints and CLIs can validate without a backend.
 */
import { validateConfigFields } from "./config-fields.js";
import { VOCAB_SIZE } from "./tokenizer.js";

/** The recurrent cell families. */
export type RnnKind = "gru" | "lstm";

/** Shape of a recurrent LM: embedding → nLayers stacked cells → linear head. Stored in checkpoints. */
export interface RnnConfig {
  /** Cell family: `gru` (gates r, z, n) or `lstm` (gates i, f, g, o, plus a cell state). */
  kind: RnnKind;
  /** Number of token ids covered by the embedding table and the output head (258 for bytes). */
  vocabSize: number;
  /**
   * Longest sequence generation may build, BOS included. A recurrent model has no position
   * table, so this bounds sampling (prompt + completion) only, exactly like the Transformer's.
   */
  contextLength: number;
  /** Width of the token embedding (the first layer's input size). */
  dModel: number;
  /** Width of every layer's hidden state h (and, for LSTM, the cell state c). */
  hidden: number;
  /** Number of stacked recurrent layers; layer l > 0 reads layer l−1's hidden states. */
  nLayers: number;
}

/** A small default: one GRU layer of 256 units over a 64-wide embedding (~0.33M parameters). */
export const DEFAULT_RNN_CONFIG: RnnConfig = {
  kind: "gru",
  vocabSize: VOCAB_SIZE,
  contextLength: 64,
  dModel: 64,
  hidden: 256,
  nLayers: 1,
};

const FIELDS = ["vocabSize", "contextLength", "dModel", "hidden", "nLayers"] as const;

/** The recurrent kinds, in the order error messages list them. */
const RNN_KINDS: readonly RnnKind[] = ["gru", "lstm"];

/** True for the recurrent model kinds. */
export function isRnnKind(kind: unknown): kind is RnnKind {
  return RNN_KINDS.includes(kind as RnnKind);
}

/** Checks an untrusted RNN config; throws ValidationError naming the field. */
export function validateRnnConfig(value: unknown): RnnConfig {
  return validateConfigFields(value, FIELDS, RNN_KINDS);
}

/** Gates per cell: GRU stacks (r, z, n), LSTM stacks (i, f, g, o) along the output axis. */
export function gateCount(kind: RnnKind): number {
  return kind === "gru" ? 3 : 4;
}

/**
 * Parameter names (GPT-2-like: `wte`, `h.{l}.…`, `lm_head.…`) and shapes, matrices stored
 * [in, out]. Per layer l: `h.{l}.weight_ih` [in, G·H] and `h.{l}.weight_hh` [H, G·H] with the
 * G gate blocks side by side in the order above, and their biases `h.{l}.bias_ih`, `h.{l}.bias_hh`
 * [G·H] (PyTorch's GRU/LSTM layout, transposed).
 */
export function rnnParameterShapes(config: RnnConfig): Map<string, number[]> {
  const { vocabSize: v, dModel: d, hidden: h, nLayers } = config;
  const g = gateCount(config.kind) * h;
  const shapes = new Map<string, number[]>([["wte", [v, d]]]);
  for (let l = 0; l < nLayers; l++) {
    shapes.set(`h.${l}.weight_ih`, [l === 0 ? d : h, g]);
    shapes.set(`h.${l}.weight_hh`, [h, g]);
    shapes.set(`h.${l}.bias_ih`, [g]);
    shapes.set(`h.${l}.bias_hh`, [g]);
  }
  shapes.set("lm_head.weight", [h, v]);
  shapes.set("lm_head.bias", [v]);
  return shapes;
}
