/**
 * "Where a model comes from" as one path: a checkpoint file this project wrote, or a Hugging Face
 * model directory (`--model <dir>`). Why one entry point: the Policy, the learner (in its thread or
 * not), the Optimizer's resume checks and `rlaif sample` all start from such a path, and each
 * would otherwise have to tell the two apart itself.
 */
import { statSync } from "node:fs";
import type { CausalLM, ModelConfig, ModelKind } from "./causal-lm.js";
import { loadCheckpoint } from "./checkpoint.js";
import { loadHfModel, readHfConfig } from "./hf-model-dir.js";
import { tunedModel } from "./lora-checkpoint.js";

/** True when `path` is a directory (a Hugging Face model directory, for the loaders here). */
export function isModelDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The model at `path`: a Hugging Face directory (with its tokenizer), else a checkpoint file (a
 * LoRA run's with its adapters on, see lora-checkpoint.ts). CheckpointError / ValidationError / TokenizerError say what is wrong with it.
 */
export async function loadModel(path: string): Promise<CausalLM> {
  if (isModelDir(path)) return (await loadHfModel(path)).model;
  return tunedModel(await loadCheckpoint(path));
}

/** The kind and config of the model at `path`, reading no weights of a directory. */
export async function loadModelInfo(path: string): Promise<{ kind: ModelKind; config: ModelConfig }> {
  if (isModelDir(path)) {
    const config = await readHfConfig(path);
    return { kind: config.kind, config };
  }
  const c = await loadCheckpoint(path);
  return { kind: c.kind, config: c.config };
}
