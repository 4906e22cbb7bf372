/**
 * A GPT-2 this project trained itself, written as the Hugging Face model directory that
 * transformers' `save_pretrained` would write (`config.json`, `generation_config.json`,
 * `model.safetensors` with `transformer.*` names, `tokenizer.json`, `tokenizer_config.json`).
 * Why that layout for a model of our own: the shipped default is then loaded by the same code as
 * any GPT-2 a user brings (`--model`), and `AutoModelForCausalLM.from_pretrained` reads it as is.
 */
import { copyFile, mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { HfGpt2Config } from "./hf-config.js";
import { hfGpt2Name } from "./hf-parameters.js";
import type { ParamModel } from "./param-model.js";
import { type TensorOut, writeSafetensors } from "./safetensors-write.js";

/** The shape of a GPT-2 (what `gpt2ConfigJson` needs besides its special ids). */
export interface Gpt2Shape {
  vocabSize: number;
  contextLength: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
}

/**
 * GPT-2's `config.json` for a shape, in the form transformers writes (tanh GELU, 4·n_embd MLP,
 * LayerNorm ε 1e-5, tied head): the fields `parseHfConfig` accepts and transformers reads.
 */
export function gpt2ConfigJson(
  s: Gpt2Shape,
  bos: number | null,
  eos: readonly number[],
): Record<string, unknown> {
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    activation_function: "gelu_new",
    n_embd: s.dModel,
    n_head: s.nHeads,
    n_layer: s.nLayers,
    n_positions: s.contextLength,
    n_inner: null,
    vocab_size: s.vocabSize,
    layer_norm_epsilon: 1e-5,
    bos_token_id: bos,
    eos_token_id: eos.length === 1 ? eos[0] : [...eos],
    tie_word_embeddings: true,
    scale_attn_weights: true,
    scale_attn_by_inverse_layer_idx: false,
    reorder_and_upcast_attn: false,
    add_cross_attention: false,
    dtype: "float32",
  };
}

/** The files of a directory besides its weights and config. */
export interface Gpt2DirFiles {
  /** tokenizer.json and tokenizer_config.json, as parsed objects. */
  tokenizer: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Extra JSON files to write (e.g. how the model was trained), by file name. */
  extra?: Record<string, unknown>;
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

/**
 * Writes `model` (an hf-gpt2 model's parameters) and `files` as the model directory `dir`. The
 * directory is built beside `dir` and renamed into place, so no crash leaves a half-written
 * directory under `dir` (between the two renames the old one is at `<dir>.old-<pid>`); files of
 * an existing `dir` that are not written again (a README) are kept.
 */
export async function writeGpt2Dir(
  dir: string,
  model: Pick<ParamModel, "getWeights"> & { config: HfGpt2Config },
  files: Gpt2DirFiles,
): Promise<void> {
  const c = model.config;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const tensors = new Map<string, TensorOut>();
  for (const [param, w] of model.getWeights()) tensors.set(hfGpt2Name(param), { ...w, dtype: "F32" });
  await writeSafetensors(path.join(tmp, "model.safetensors"), tensors);
  const written: Record<string, unknown> = {
    "config.json": gpt2ConfigJson(c, c.bosTokenId, c.eosTokenIds),
    "generation_config.json": {
      bos_token_id: c.bosTokenId,
      eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds,
      pad_token_id: c.eosTokenIds[0],
    },
    "tokenizer.json": files.tokenizer,
    "tokenizer_config.json": files.tokenizerConfig,
    ...files.extra,
  };
  for (const [name, value] of Object.entries(written)) await writeFile(path.join(tmp, name), json(value));
  const kept = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return [];
    throw e;
  });
  const fresh = new Set(await readdir(tmp));
  for (const f of kept) if (!fresh.has(f)) await copyFile(path.join(dir, f), path.join(tmp, f));
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "ENOENT") throw e;
  });
  await rename(tmp, dir);
  await rm(old, { recursive: true, force: true });
}
