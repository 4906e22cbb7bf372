/**
 * Transformer hyperparameters and the parameter layout they imply.
 *
 * Kept apart from the model code so that checkpoints, CLIs and services can validate a config
 * and compute shapes without touching TensorFlow.js.
 */
import { ValidationError } from "../errors.js";
import { validateConfigFields } from "./config-fields.js";
import { VOCAB_SIZE } from "./tokenizer.js";

/** Shape of a decoder-only GPT. Stored as JSON in every checkpoint. */
export interface TransformerConfig {
  /** Number of token ids covered by the embedding table and the output head (258 for bytes). */
  vocabSize: number;
  /**
   * Longest sequence the model reads, BOS included: the size of the learned position table.
   * A prompt plus its completion must fit in it.
   */
  contextLength: number;
  /** Width of the residual stream (embedding size). Must be divisible by `nHeads`. */
  dModel: number;
  /** Number of transformer blocks (pre-LN attention + pre-LN MLP). */
  nLayers: number;
  /** Attention heads per block; each head has `dModel / nHeads` dimensions. */
  nHeads: number;
}

/**
 * The default policy: ~0.83M parameters, small enough to pre-train on two wasm cores in about
 * ten minutes and to sample thousands of tokens per second, large enough for English-like text.
 */
export const DEFAULT_TRANSFORMER_CONFIG: TransformerConfig = {
  vocabSize: VOCAB_SIZE,
  contextLength: 64,
  dModel: 128,
  nLayers: 4,
  nHeads: 4,
};

const FIELDS = ["vocabSize", "contextLength", "dModel", "nLayers", "nHeads"] as const;

/** Checks an untrusted config (CLI flags, checkpoint JSON); throws ValidationError naming the field. */
export function validateTransformerConfig(value: unknown): TransformerConfig {
  const c = validateConfigFields(value, FIELDS);
  if (c.dModel % c.nHeads !== 0) {
    throw new ValidationError("config.nHeads", `must divide dModel (${c.dModel}), got ${c.nHeads}`);
  }
  return c;
}

/**
 * Parameter names (GPT-2 naming, so Python tooling recognises them) and shapes. Matrices are
 * stored [in, out]. The output head `lm_head.weight` is untied from `wte`: with a 258-entry
 * vocabulary tying would save only 33k parameters, and separate matrices keep the embedding
 * gradient a plain lookup-gradient.
 */
export function transformerParameterShapes(config: TransformerConfig): Map<string, number[]> {
  const { vocabSize: v, contextLength: t, dModel: c, nLayers } = config;
  const shapes = new Map<string, number[]>([
    ["wte", [v, c]],
    ["wpe", [t, c]],
  ]);
  for (let i = 0; i < nLayers; i++) {
    const p = `h.${i}`;
    shapes.set(`${p}.ln_1.weight`, [c]);
    shapes.set(`${p}.ln_1.bias`, [c]);
    shapes.set(`${p}.attn.c_attn.weight`, [c, 3 * c]);
    shapes.set(`${p}.attn.c_attn.bias`, [3 * c]);
    shapes.set(`${p}.attn.c_proj.weight`, [c, c]);
    shapes.set(`${p}.attn.c_proj.bias`, [c]);
    shapes.set(`${p}.ln_2.weight`, [c]);
    shapes.set(`${p}.ln_2.bias`, [c]);
    shapes.set(`${p}.mlp.c_fc.weight`, [c, 4 * c]);
    shapes.set(`${p}.mlp.c_fc.bias`, [4 * c]);
    shapes.set(`${p}.mlp.c_proj.weight`, [4 * c, c]);
    shapes.set(`${p}.mlp.c_proj.bias`, [c]);
  }
  shapes.set("ln_f.weight", [c]);
  shapes.set("ln_f.bias", [c]);
  shapes.set("lm_head.weight", [c, v]);
  return shapes;
}
