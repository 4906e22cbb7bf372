/**
 * Parameter layouts of the Hugging Face kinds, the GPT-2 name map between a directory's tensors
 * and the model's parameters, and validation of the camelCase configs (as our own checkpoints
 * store them). TensorFlow.js-free, so checkpoint and config code can use it without a backend.
 *
 * Why a GPT-2 name map and none for Llama: GPT-2 runs on the project's Transformer, whose names
 * are GPT-2's without the `transformer.` prefix (`wte`, `h.0.attn.c_attn.weight`); the Llama
 * kinds keep the Hugging Face names as they are.
 */
import { ValidationError } from "../errors.js";
import { validateConfigFields } from "./config-fields.js";
import type { HfGpt2Config, HfLlamaConfig, HfModelConfig } from "./hf-config.js";
import { transformerParameterShapes, validateTransformerConfig } from "./transformer-config.js";

/** Parameter names and shapes of a GPT-2: the Transformer's, without a separate head (tied to wte). */
export function hfGpt2ParameterShapes(c: HfGpt2Config): Map<string, number[]> {
  const shapes = transformerParameterShapes(c);
  shapes.delete("lm_head.weight");
  return shapes;
}

/** Parameter names (Hugging Face's) and shapes ([out, in] matrices) of a Llama-family config. */
export function hfLlamaParameterShapes(c: HfLlamaConfig): Map<string, number[]> {
  const { vocabSize: v, dModel: m, nHeads: h, nKvHeads: kv, headDim: d, ffnSize: f } = c;
  const shapes = new Map<string, number[]>([["model.embed_tokens.weight", [v, m]]]);
  for (let i = 0; i < c.nLayers; i++) {
    const p = `model.layers.${i}`;
    shapes.set(`${p}.input_layernorm.weight`, [m]);
    shapes.set(`${p}.self_attn.q_proj.weight`, [h * d, m]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [kv * d, m]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [kv * d, m]);
    if (c.family === "qwen2") {
      shapes.set(`${p}.self_attn.q_proj.bias`, [h * d]);
      shapes.set(`${p}.self_attn.k_proj.bias`, [kv * d]);
      shapes.set(`${p}.self_attn.v_proj.bias`, [kv * d]);
    }
    shapes.set(`${p}.self_attn.o_proj.weight`, [m, h * d]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [m]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [f, m]);
    shapes.set(`${p}.mlp.up_proj.weight`, [f, m]);
    shapes.set(`${p}.mlp.down_proj.weight`, [m, f]);
  }
  shapes.set("model.norm.weight", [m]);
  if (!c.tiedHead) shapes.set("lm_head.weight", [v, m]);
  return shapes;
}

/** Parameter names and shapes of either Hugging Face kind. */
export function hfParameterShapes(c: HfModelConfig): Map<string, number[]> {
  return c.kind === "hf-gpt2" ? hfGpt2ParameterShapes(c) : hfLlamaParameterShapes(c);
}

/** What a GPT-2 file's tensor is: a parameter (by our name), a mask buffer, or the tied head. */
export type Gpt2Tensor =
  | { param: string }
  | { buffer: "attn.bias" | "attn.masked_bias" }
  | { tiedHead: true };

/**
 * Classifies a GPT-2 tensor name of either naming: `transformer.h.0.…` as save_pretrained
 * writes it or `h.0.…` as the original hub files do (with `attn.bias` / `attn.masked_bias` mask
 * buffers, which transformers ignores too), plus an optional `lm_head.weight` (= wte when tied).
 */
export function classifyGpt2Tensor(name: string): Gpt2Tensor {
  if (name === "lm_head.weight") return { tiedHead: true };
  const bare = name.startsWith("transformer.") ? name.slice("transformer.".length) : name;
  if (/^h\.\d+\.attn\.bias$/.test(bare)) return { buffer: "attn.bias" };
  if (/^h\.\d+\.attn\.masked_bias$/.test(bare)) return { buffer: "attn.masked_bias" };
  if (bare === "wte.weight" || bare === "wpe.weight") return { param: bare.slice(0, 3) };
  return { param: bare };
}

/** The Hugging Face (save_pretrained) name of a GPT-2 parameter: the inverse of `classifyGpt2Tensor`. */
export function hfGpt2Name(param: string): string {
  return `transformer.${param === "wte" || param === "wpe" ? `${param}.weight` : param}`;
}

function tokenIdField(value: unknown, field: string, vocab: number, nullable: boolean): void {
  if (nullable && value === null) return;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= vocab)
    throw new ValidationError(`config.${field}`, `must be a token id below ${vocab}`);
}

function checkTokens(
  v: Record<string, unknown>,
  vocab: number,
): { bosTokenId: number | null; eosTokenIds: number[] } {
  tokenIdField(v.bosTokenId, "bosTokenId", vocab, true);
  if (!Array.isArray(v.eosTokenIds))
    throw new ValidationError("config.eosTokenIds", "must be a list of token ids");
  v.eosTokenIds.forEach((id, i) => {
    tokenIdField(id, `eosTokenIds[${i}]`, vocab, false);
  });
  return { bosTokenId: v.bosTokenId as number | null, eosTokenIds: [...(v.eosTokenIds as number[])] };
}

function positiveNumber(v: Record<string, unknown>, field: string): number {
  const x = v[field];
  if (typeof x !== "number" || !(x > 0) || !Number.isFinite(x))
    throw new ValidationError(`config.${field}`, `must be a positive number, got ${JSON.stringify(x)}`);
  return x;
}

const LLAMA_INTS = [
  "vocabSize",
  "contextLength",
  "dModel",
  "nLayers",
  "nHeads",
  "nKvHeads",
  "headDim",
  "ffnSize",
] as const;

/**
 * Checks an untrusted camelCase config of `kind` (hf-gpt2 or hf-llama), as a checkpoint stores it;
 * throws ValidationError naming the bad field. (Directories' config.json go through parseHfConfig.)
 */
export function validateHfModelConfig(kind: "hf-gpt2" | "hf-llama", value: unknown): HfModelConfig {
  if (typeof value !== "object" || value === null) throw new ValidationError("config", "must be an object");
  const v = value as Record<string, unknown>;
  if (v.kind !== kind) throw new ValidationError("config.kind", `must be ${JSON.stringify(kind)}`);
  if (kind === "hf-gpt2") {
    const t = validateTransformerConfig(v);
    return { kind, ...t, ...checkTokens(v, t.vocabSize) };
  }
  const c = validateConfigFields(v, LLAMA_INTS);
  if (v.family !== "llama" && v.family !== "qwen2")
    throw new ValidationError("config.family", `must be "llama" or "qwen2", got ${JSON.stringify(v.family)}`);
  if (c.nHeads % c.nKvHeads !== 0)
    throw new ValidationError("config.nKvHeads", `must divide nHeads (${c.nHeads}), got ${c.nKvHeads}`);
  if (c.headDim % 2 !== 0)
    throw new ValidationError("config.headDim", `must be even for RoPE, got ${c.headDim}`);
  if (typeof v.tiedHead !== "boolean") throw new ValidationError("config.tiedHead", "must be true or false");
  return {
    kind,
    family: v.family,
    ...c,
    rmsNormEps: positiveNumber(v, "rmsNormEps"),
    ropeTheta: positiveNumber(v, "ropeTheta"),
    tiedHead: v.tiedHead,
    ...checkTokens(v, c.vocabSize),
  };
}
