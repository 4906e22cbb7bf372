/**
 * Test fixtures: a tiny randomly initialised Transformer checkpoint (fast to sample and train on
 * 2 cores) and a config that points every service at it, with temp output directories.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig, type RlaifConfig } from "../../services/core/src/config/settings.js";
import { initBackend } from "../../services/core/src/model/backend.js";
import { checkpointFromModel, saveCheckpoint } from "../../services/core/src/model/checkpoint.js";
import { createTransformer } from "../../services/core/src/model/transformer.js";
import type { TransformerConfig } from "../../services/core/src/model/transformer-config.js";

/** A model small enough for a whole RLAIF step to take well under a second. */
export const TINY_MODEL: TransformerConfig = {
  vocabSize: 258,
  contextLength: 48,
  dModel: 32,
  nLayers: 1,
  nHeads: 2,
};

/** Write a tiny checkpoint into a fresh temp directory and return its path. */
export async function writeTinyCheckpoint(seed = 7): Promise<string> {
  await initBackend("wasm");
  const model = createTransformer(TINY_MODEL, seed);
  const path = join(mkdtempSync(join(tmpdir(), "rlaif-test-")), "tiny.safetensors");
  await saveCheckpoint(path, checkpointFromModel(model, { producedBy: "test fixture" }));
  model.dispose();
  return path;
}

/** A config for a short run on the tiny checkpoint (3 steps × 4 prompts × 2 samples × 8 tokens). */
export function tinyRunConfig(checkpoint: string, overrides: Partial<RlaifConfig["run"]> = {}): RlaifConfig {
  const config = defaultConfig();
  config.services.checkpoint = checkpoint;
  config.services.backend = "wasm";
  config.services.rpcTimeoutMs = 30_000;
  config.services.stepTimeoutMs = 60_000;
  config.out = mkdtempSync(join(tmpdir(), "rlaif-runs-"));
  Object.assign(config.run, {
    steps: 3,
    promptsPerStep: 4,
    samplesPerPrompt: 2,
    maxNewTokens: 8,
    prompts: ["The film was", "I think that", "She said", "It is a"],
    ...overrides,
  });
  return config;
}
