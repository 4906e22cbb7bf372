/**
 * Hugging Face `config.json` for the architectures this code runs: GPT-2 (`GPT2LMHeadModel`,
 * model_type gpt2) and the Llama family (`LlamaForCausalLM` llama, `Qwen2ForCausalLM` qwen2),
 * turned into the project's camelCase model configs (kinds `hf-gpt2`, `hf-llama`).
 *
 * Why strict: a config option this code does not implement (a RoPE scaling scheme, sliding-window
 * attention, another activation) would otherwise load "fine" and give wrong logits. Every such
 * option stops with a ValidationError naming the `config.json` field, and the defaults are the
 * ones transformers itself applies when a field is absent. TensorFlow.js-free, like the other
 * config modules.
 */
import { ValidationError } from "../errors.js";
import type { TransformerConfig } from "./transformer-config.js";

/** A GPT-2 (`GPT2LMHeadModel`): the project's Transformer with the head tied to `wte`. */
export interface HfGpt2Config extends TransformerConfig {
  kind: "hf-gpt2";
  /** Token that starts a sequence (GPT-2: 50256), null when the config has none. */
  bosTokenId: number | null;
  /** Tokens that end one (config.json's `eos_token_id`, one id or a list). */
  eosTokenIds: number[];
}

/** A Llama-family decoder (Llama, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query attention. */
export interface HfLlamaConfig {
  kind: "hf-llama";
  /** `model_type`: qwen2 adds biases to the q, k and v projections. */
  family: "llama" | "qwen2";
  vocabSize: number;
  /** `max_position_embeddings`: the longest sequence the samplers build. */
  contextLength: number;
  /** `hidden_size`. */
  dModel: number;
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads (`num_key_value_heads`); divides nHeads. */
  nKvHeads: number;
  /** Per-head width (`head_dim`, default hidden_size / num_attention_heads). */
  headDim: number;
  /** `intermediate_size`: the SwiGLU MLP's width. */
  ffnSize: number;
  rmsNormEps: number;
  /** RoPE base θ (`rope_theta` or `rope_parameters.rope_theta`). */
  ropeTheta: number;
  /** `tie_word_embeddings`: logits use `embed_tokens` instead of a separate `lm_head`. */
  tiedHead: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/** Either Hugging Face architecture. */
export type HfModelConfig = HfGpt2Config | HfLlamaConfig;

/** The model kinds Hugging Face directories load as. */
export const HF_MODEL_KINDS = ["hf-gpt2", "hf-llama"] as const;

/** `architectures` entries accepted per model_type (informational field; checked when present). */
const ARCHITECTURES: Record<string, string> = {
  gpt2: "GPT2LMHeadModel",
  llama: "LlamaForCausalLM",
  qwen2: "Qwen2ForCausalLM",
};

type Json = Record<string, unknown>;

/** Field readers that name `config.json: <field>` in their errors. */
class Fields {
  constructor(
    private readonly c: Json,
    private readonly where: string,
  ) {}

  private bad(field: string, reason: string): never {
    throw new ValidationError(`${this.where}: ${field}`, reason);
  }

  int(field: string, fallback?: number): number {
    const x = this.c[field] ?? fallback;
    if (typeof x !== "number" || !Number.isInteger(x) || x < 1)
      this.bad(field, `must be a positive integer, got ${JSON.stringify(this.c[field])}`);
    return x;
  }

  positive(field: string, fallback?: number): number {
    const x = this.c[field] ?? fallback;
    if (typeof x !== "number" || !(x > 0) || !Number.isFinite(x))
      this.bad(field, `must be a positive number, got ${JSON.stringify(this.c[field])}`);
    return x;
  }

  bool(field: string, fallback: boolean): boolean {
    const x = this.c[field] ?? fallback;
    if (typeof x !== "boolean") this.bad(field, `must be true or false, got ${JSON.stringify(x)}`);
    return x;
  }

  /** Refuses any value but the ones this code implements (absent or null: the default, accepted). */
  only(field: string, allowed: readonly unknown[], what: string): void {
    const x = this.c[field];
    if (x === undefined || x === null || allowed.includes(x)) return;
    this.bad(field, `${JSON.stringify(x)} is not supported (${what})`);
  }

  tokenId(field: string, vocab: number): number | null {
    const x = this.c[field];
    if (x === undefined || x === null) return null;
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0 || x >= vocab)
      this.bad(field, `must be a token id below vocab_size ${vocab}, got ${JSON.stringify(x)}`);
    return x;
  }

  tokenIds(field: string, vocab: number): number[] {
    const x = this.c[field];
    if (x === undefined || x === null) return [];
    const list = Array.isArray(x) ? x : [x];
    return list.map((id, i) => {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= vocab)
        this.bad(Array.isArray(x) ? `${field}[${i}]` : field, `must be a token id below vocab_size ${vocab}`);
      return id;
    });
  }

  divides(field: string, divisor: number, of: number, ofField: string): void {
    if (of % divisor !== 0) this.bad(field, `${divisor} must divide ${ofField} (${of})`);
  }
}

function parseGpt2(f: Fields): HfGpt2Config {
  const vocabSize = f.int("vocab_size");
  const dModel = f.int("n_embd");
  const nHeads = f.int("n_head");
  f.divides("n_head", nHeads, dModel, "n_embd");
  f.only("n_inner", [4 * dModel], `the MLP is 4·n_embd = ${4 * dModel} wide`);
  f.only("activation_function", ["gelu_new", "gelu_pytorch_tanh"], "GELU's tanh form only");
  f.only("layer_norm_epsilon", [1e-5], "LayerNorm epsilon is 1e-5");
  f.only("scale_attn_weights", [true], "scores are always scaled by 1/√head_dim");
  f.only("scale_attn_by_inverse_layer_idx", [false], "no per-layer score scaling");
  f.only("add_cross_attention", [false], "decoder-only models");
  f.only("tie_word_embeddings", [true], "GPT2LMHeadModel's head is tied to wte");
  return {
    kind: "hf-gpt2",
    vocabSize,
    contextLength: f.int("n_positions"),
    dModel,
    nLayers: f.int("n_layer"),
    nHeads,
    bosTokenId: f.tokenId("bos_token_id", vocabSize),
    eosTokenIds: f.tokenIds("eos_token_id", vocabSize),
  };
}

/** θ from 5.x `rope_parameters` or 4.x `rope_theta` + `rope_scaling`; other RoPE types refused. */
function ropeTheta(c: Json, f: Fields, where: string): number {
  const params = c.rope_parameters;
  for (const [field, value] of [
    ["rope_parameters", params],
    ["rope_scaling", c.rope_scaling],
  ] as const) {
    if (value === undefined || value === null) continue;
    if (typeof value !== "object" || Array.isArray(value))
      throw new ValidationError(`${where}: ${field}`, "must be an object");
    const v = value as Json;
    const type = v.rope_type ?? v.type ?? "default";
    if (type !== "default")
      throw new ValidationError(
        `${where}: ${field}.rope_type`,
        `${JSON.stringify(type)} is not supported (only plain RoPE, "default")`,
      );
  }
  if (typeof params === "object" && params !== null && "rope_theta" in params) {
    return new Fields(params as Json, `${where}: rope_parameters`).positive("rope_theta");
  }
  return f.positive("rope_theta", 10000);
}

function parseLlama(c: Json, f: Fields, family: "llama" | "qwen2", where: string): HfLlamaConfig {
  const vocabSize = f.int("vocab_size");
  const dModel = f.int("hidden_size");
  const nHeads = f.int("num_attention_heads");
  const nKvHeads = f.int("num_key_value_heads", nHeads);
  f.divides("num_key_value_heads", nKvHeads, nHeads, "num_attention_heads");
  if (c.head_dim === undefined || c.head_dim === null)
    f.divides("num_attention_heads", nHeads, dModel, "hidden_size");
  const headDim = f.int("head_dim", dModel / nHeads);
  if (headDim % 2 !== 0)
    throw new ValidationError(`${where}: head_dim`, `must be even for RoPE, got ${headDim}`);
  f.only("hidden_act", ["silu"], "the MLP is SwiGLU with SiLU");
  f.only("mlp_bias", [false], "the MLP has no biases");
  f.only("pretraining_tp", [1], "tensor-parallel slicing is not emulated");
  f.only("rope_interleaved", [false], "RoPE rotates halves (rotate_half)");
  if (family === "llama") f.only("attention_bias", [false], "Llama attention without biases");
  if (family === "qwen2") {
    f.only("use_sliding_window", [false], "sliding-window attention is not implemented");
    const types = c.layer_types;
    if (Array.isArray(types)) {
      const i = types.findIndex((t) => t !== "full_attention");
      if (i >= 0)
        throw new ValidationError(
          `${where}: layer_types[${i}]`,
          `${JSON.stringify(types[i])} is not supported (only "full_attention")`,
        );
    }
  }
  return {
    kind: "hf-llama",
    family,
    vocabSize,
    contextLength: f.int("max_position_embeddings"),
    dModel,
    nLayers: f.int("num_hidden_layers"),
    nHeads,
    nKvHeads,
    headDim,
    ffnSize: f.int("intermediate_size"),
    rmsNormEps: f.positive("rms_norm_eps", 1e-6),
    ropeTheta: ropeTheta(c, f, where),
    tiedHead: f.bool("tie_word_embeddings", false),
    bosTokenId: f.tokenId("bos_token_id", vocabSize),
    eosTokenIds: f.tokenIds("eos_token_id", vocabSize),
  };
}

/**
 * The model config of a parsed `config.json` (`where` names the file in errors). Throws
 * ValidationError naming the field for an unsupported model_type, architecture or option.
 */
export function parseHfConfig(value: unknown, where = "config.json"): HfModelConfig {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new ValidationError(where, "must be a JSON object");
  const c = value as Json;
  const type = c.model_type;
  if (typeof type !== "string" || !(type in ARCHITECTURES)) {
    throw new ValidationError(
      `${where}: model_type`,
      `${JSON.stringify(type)} is not supported (choose gpt2, llama or qwen2)`,
    );
  }
  const arch = c.architectures;
  if (arch !== undefined && arch !== null) {
    if (!Array.isArray(arch) || arch.length !== 1 || arch[0] !== ARCHITECTURES[type])
      throw new ValidationError(
        `${where}: architectures`,
        `must be ["${ARCHITECTURES[type]}"] for model_type ${type}, got ${JSON.stringify(arch)}`,
      );
  }
  const f = new Fields(c, where);
  return type === "gpt2" ? parseGpt2(f) : parseLlama(c, f, type as "llama" | "qwen2", where);
}
