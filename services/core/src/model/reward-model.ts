/**
 * A reward model on disk and in memory: a backbone policy checkpoint (any kind `loadModel`
 * reads) with the scalar head of learn/reward-head.ts on its pooled features
 * (reward-features.ts). A reward-model directory holds `reward-head.safetensors` (μ, σ, w) and
 * `reward-model.json` (backbone path and SHA-256, head, tokenizer, label provenance, training
 * figures, and the model hash): docs/reward-model.md#the-directory.
 *
 * Why the backbone is referenced, not copied: it is an unchanged policy checkpoint the project
 * already ships (frozen in training), so the directory stays a few kilobytes; its SHA-256 is
 * checked at load, so a changed backbone is refused instead of silently scoring differently.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { CheckpointError } from "../errors.js";
import { sha256Hex } from "../hash.js";
import { headRewards, type RewardHead } from "../learn/reward-head.js";
import type { CausalLM, ModelKind } from "./causal-lm.js";
import { isModelDir, loadModel } from "./model-source.js";
import { featureCount, pooledFeatures, type TextPair } from "./reward-features.js";
import { INDEX_FILE, SINGLE_FILE } from "./safetensors.js";
import { decodeSafetensors, encodeSafetensors } from "./safetensors-bytes.js";

/** File names inside a reward-model directory. */
export const RM_CONFIG_FILE = "reward-model.json";
export const RM_HEAD_FILE = "reward-head.safetensors";
/** `format` of reward-model.json; bump `version` when its meaning changes. */
export const RM_FORMAT = "rlaif-reward-model";
export const RM_FORMAT_VERSION = 2;

/** What reward-model.json holds. */
export interface RewardModelConfig {
  format: typeof RM_FORMAT;
  version: number;
  backbone: {
    /** As given to train-rm: relative paths resolve against the reward-model directory. */
    path: string;
    kind: ModelKind;
    /** SHA-256 of the backbone's weights file (model.safetensors of a directory). */
    sha256: string;
  };
  head: {
    type: "linear";
    pooling: "mean-over-completion";
    input: "logits+token-shares+log-length+count-steps";
    features: number;
  };
  tokenizer: string;
  labels: {
    file: string;
    sha256: string;
    pairs: number;
    trainPairs: number;
    heldOutPairs: number;
    labellers: { id: string; version: string; modelHash: string }[];
  };
  training: Record<string, number>;
  metrics: { trainAccuracy: number; heldOutAccuracy: number | null };
  /** SHA-256 over the head file's bytes and the backbone's SHA-256: the scorer's model_hash. */
  hash: string;
}

/** SHA-256 of the weights a backbone path names (a checkpoint file, or a model directory's). */
export function backboneSha256(backbone: string): string {
  const file = isModelDir(backbone)
    ? path.join(backbone, existsSync(path.join(backbone, SINGLE_FILE)) ? SINGLE_FILE : INDEX_FILE)
    : backbone;
  return sha256Hex(readFileSync(file));
}

/** The head's bytes as stored (μ, σ, w as F32 tensors [D]). */
function headBytes(head: RewardHead): Uint8Array {
  const t = (data: Float32Array) => ({ shape: [data.length], data });
  return encodeSafetensors(
    new Map([
      ["mean", t(head.mean)],
      ["scale", t(head.scale)],
      ["weight", t(head.weight)],
    ]),
    { format: RM_FORMAT },
  );
}

/** The model hash: SHA-256 of the head bytes followed by the backbone's hex SHA-256. */
function modelHash(bytes: Uint8Array, backboneSha: string): string {
  return sha256Hex(Buffer.concat([bytes, Buffer.from(backboneSha, "utf8")]));
}

/**
 * Writes `dir`/reward-head.safetensors and `dir`/reward-model.json (the config given, with its
 * hash filled in); returns the hash.
 */
export function saveRewardModel(
  dir: string,
  head: RewardHead,
  config: Omit<RewardModelConfig, "hash">,
): string {
  mkdirSync(dir, { recursive: true });
  const bytes = headBytes(head);
  const hash = modelHash(bytes, config.backbone.sha256);
  writeFileSync(path.join(dir, RM_HEAD_FILE), bytes);
  writeFileSync(path.join(dir, RM_CONFIG_FILE), `${JSON.stringify({ ...config, hash }, null, 2)}\n`);
  return hash;
}

/** A loaded reward model: scores text pairs; owns its backbone (dispose frees it). */
export interface RewardModel {
  readonly config: RewardModelConfig;
  readonly backbone: CausalLM;
  /** r(prompt, completion) for every item, in order; deterministic for a given directory. */
  rewards(items: readonly TextPair[]): number[];
  dispose(): void;
}

/** A reward model from its head and an already loaded backbone (train-rm's evaluation, tests). */
export function rewardModelOf(config: RewardModelConfig, head: RewardHead, backbone: CausalLM): RewardModel {
  return {
    config,
    backbone,
    rewards: (items) => (items.length === 0 ? [] : headRewards(head, pooledFeatures(backbone, items))),
    dispose: () => backbone.dispose(),
  };
}

/**
 * Loads the reward model in `dir`: CheckpointError naming the file when something is missing or
 * does not match (format, head shapes, the backbone's SHA-256, the stored hash). The tfjs
 * backend must be started.
 */
export async function loadRewardModel(dir: string): Promise<RewardModel> {
  const cfgFile = path.join(dir, RM_CONFIG_FILE);
  const headFile = path.join(dir, RM_HEAD_FILE);
  for (const f of [cfgFile, headFile])
    if (!existsSync(f))
      throw new CheckpointError(`${f} does not exist: make a reward model with 'rlaif train-rm'`);
  let config: RewardModelConfig;
  try {
    config = JSON.parse(readFileSync(cfgFile, "utf8")) as RewardModelConfig;
  } catch (cause) {
    throw new CheckpointError(`${cfgFile} is not JSON: ${(cause as Error).message}`, { cause });
  }
  if (config.format !== RM_FORMAT || config.version !== RM_FORMAT_VERSION)
    throw new CheckpointError(`${cfgFile}: not a ${RM_FORMAT} v${RM_FORMAT_VERSION} config`);
  const bytes = new Uint8Array(readFileSync(headFile));
  const { tensors } = decodeSafetensors(bytes, headFile);
  const get = (name: string): Float32Array => {
    const t = tensors.get(name);
    if (!t || t.data.length !== config.head.features)
      throw new CheckpointError(`${headFile}: tensor "${name}" missing or not [${config.head.features}]`);
    return t.data;
  };
  const head: RewardHead = { mean: get("mean"), scale: get("scale"), weight: get("weight") };
  const backbonePath = path.resolve(dir, config.backbone.path);
  if (!existsSync(backbonePath))
    throw new CheckpointError(`${cfgFile}: its backbone ${backbonePath} does not exist`);
  const sha = backboneSha256(backbonePath);
  if (sha !== config.backbone.sha256)
    throw new CheckpointError(
      `${cfgFile}: backbone ${backbonePath} has SHA-256 ${sha}, the reward model was trained on ${config.backbone.sha256}`,
    );
  if (modelHash(bytes, sha) !== config.hash)
    throw new CheckpointError(`${cfgFile}: "hash" does not match ${RM_HEAD_FILE} and the backbone`);
  const backbone = await loadModel(backbonePath);
  if (featureCount(backbone) !== config.head.features) {
    backbone.dispose();
    throw new CheckpointError(
      `${cfgFile}: the head reads ${config.head.features} features, the backbone gives ${featureCount(backbone)}`,
    );
  }
  return rewardModelOf(config, head, backbone);
}
