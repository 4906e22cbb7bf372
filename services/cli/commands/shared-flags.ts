/** Checks several commands share. */
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { explicitSettings } from "../../core/src/config/load-config.js";
import type { RlaifConfig } from "../../core/src/config/settings.js";
import { ConfigError } from "../../core/src/errors.js";

/**
 * Fails with a message that says what to do when the checkpoint is missing: a checkpoint file, or
 * a model directory (the shipped default is one) that must hold what `requireModelDir` checks.
 */
export function requireCheckpoint(file: string): void {
  if (!existsSync(file)) {
    throw new ConfigError(
      `checkpoint ${file} does not exist: pass --checkpoint <file or model directory>, or make one with 'rlaif pretrain --out <file>'`,
    );
  }
  if (statSync(file).isDirectory()) requireModelDir(file, "--checkpoint");
}

/**
 * Fails naming what is missing unless `dir` is a Hugging Face model directory this project can
 * load: config.json, model.safetensors (or a sharded model.safetensors.index.json), tokenizer.json.
 */
export function requireModelDir(dir: string, flag = "--model"): void {
  const what = `${flag} must be a Hugging Face model directory`;
  if (!existsSync(dir)) throw new ConfigError(`${what}: ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new ConfigError(`${what}: ${dir} is a file`);
  const has = (f: string) => existsSync(path.join(dir, f));
  const missing = [
    ...(has("config.json") ? [] : ["config.json"]),
    ...(has("model.safetensors") || has("model.safetensors.index.json")
      ? []
      : ["model.safetensors (or model.safetensors.index.json)"]),
    ...(has("tokenizer.json") ? [] : ["tokenizer.json"]),
  ];
  if (missing.length > 0) throw new ConfigError(`${what}: ${dir} has no ${missing.join(", no ")}`);
}

/**
 * Checks the model a command will load and says where it is: the `--model` directory when one is
 * given (the services then load it in place of a checkpoint), else the checkpoint file.
 * ConfigError when both are given or the one given is missing.
 */
export function requireModel(config: RlaifConfig): void {
  const s = config.services;
  if (s.model === "") {
    requireCheckpoint(s.checkpoint);
    return;
  }
  if (explicitSettings(config).has("services.checkpoint"))
    throw new ConfigError("--model and --checkpoint both name the model to load: pass one of them");
  requireModelDir(s.model);
  s.checkpoint = path.resolve(s.model);
}
