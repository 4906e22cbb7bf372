/**
 * A Hugging Face model directory (`config.json` + `model.safetensors` or its sharded index) as a
 * `CausalLM`, in one call: what `--model <dir>` wiring needs.
 *
 * Why the tensor checks here and not only in the model's constructor: a constructor's
 * WeightsError names a parameter, a directory's user needs the tensor and the file, so names and
 * shapes are compared against the config first and reported as CheckpointError.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { CheckpointError, ValidationError } from "../errors.js";
import type { CausalLM, WeightMap } from "./causal-lm.js";
import { type HfModelConfig, parseHfConfig } from "./hf-config.js";
import { gpt2WeightsFromHf, HfGpt2LM } from "./hf-gpt2.js";
import { HfLlamaLM } from "./hf-llama.js";
import type { HfOrigin } from "./hf-origin.js";
import { hfLlamaParameterShapes } from "./hf-parameters.js";
import { type FloatDtype, readSafetensorsDir } from "./safetensors.js";
import { loadHfTokenizer } from "./tokenizer-hf.js";
import type { Tokenizer } from "./tokenizer-types.js";

/** A loaded directory: the model, its config, and each tensor's dtype on disk. */
export interface HfModel {
  model: CausalLM;
  config: HfModelConfig;
  dtypes: Map<string, FloatDtype>;
}

/** Reads and validates `dir/config.json` (ValidationError naming the field, CheckpointError if unreadable). */
export async function readHfConfig(dir: string): Promise<HfModelConfig> {
  const file = path.join(dir, "config.json");
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    throw new CheckpointError(`${file}: cannot read: ${(e as Error).message}`, { cause: e });
  }
  return parseHfConfig(json, file);
}

/** Checks a Llama-family directory's tensors against its config (names, shapes), naming the tensor. */
function llamaWeights(c: HfModelConfig & { kind: "hf-llama" }, tensors: WeightMap, where: string): WeightMap {
  const shapes = hfLlamaParameterShapes(c);
  for (const [name, t] of tensors) {
    const want = shapes.get(name);
    if (want === undefined) {
      const hint = name === "lm_head.weight" ? " (config.json says tie_word_embeddings: true)" : "";
      throw new CheckpointError(`${where}: tensor '${name}' is not a parameter of this model${hint}`);
    }
    if (want.join() !== t.shape.join())
      throw new CheckpointError(`${where}: tensor '${name}' is [${t.shape}], config.json says [${want}]`);
  }
  for (const name of shapes.keys()) {
    if (!tensors.has(name)) throw new CheckpointError(`${where}: tensor '${name}' is missing`);
  }
  return tensors;
}

/**
 * The model of a Hugging Face directory (GPT-2, Llama or Qwen2), weights decoded to float32,
 * carrying the directory's own tokenizer when it has a tokenizer.json (so BOS, EOS and every
 * token's bytes are the model's; TokenizerError if that file cannot be used) and its origin.
 * Throws ValidationError for an unsupported config field, CheckpointError for a missing,
 * unreadable or mismatched weights file (naming file and tensor).
 */
export async function loadHfModel(dir: string): Promise<HfModel> {
  const config = await readHfConfig(dir);
  const { weights, dtypes } = await readSafetensorsDir(dir);
  const origin: HfOrigin = { dir: path.resolve(dir), dtypes: Object.fromEntries(dtypes) };
  const tokenizer: Tokenizer | undefined = existsSync(path.join(dir, "tokenizer.json"))
    ? loadHfTokenizer(dir, { modelVocabSize: config.vocabSize })
    : undefined;
  const extras = { origin, ...(tokenizer ? { tokenizer } : {}) };
  if (config.kind === "hf-gpt2") {
    return { model: new HfGpt2LM(config, gpt2WeightsFromHf(config, weights, dir), extras), config, dtypes };
  }
  return { model: new HfLlamaLM(config, llamaWeights(config, weights, dir), extras), config, dtypes };
}

/** The `CausalLM` of a Hugging Face directory (see `loadHfModel`). */
export async function modelFromHfDir(dir: string): Promise<CausalLM> {
  if (typeof dir !== "string" || dir === "") throw new ValidationError("model", "must be a directory path");
  return (await loadHfModel(dir)).model;
}
