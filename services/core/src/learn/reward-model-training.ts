/**
 * Training a reward model end to end (what `rlaif train-rm` does): split the labels by prompt
 * into training and held-out pairs, compute the backbone's features of every completion once
 * (model/reward-features.ts), train the Bradley–Terry head (reward-head.ts) with pairwise
 * accuracy on both sides per epoch, and write the directory (model/reward-model.ts).
 */
import path from "node:path";
import { ValidationError } from "../errors.js";
import { sha256Hex } from "../hash.js";
import type { CausalLM } from "../model/causal-lm.js";
import { modelKindOf } from "../model/causal-lm.js";
import { pooledFeatures } from "../model/reward-features.js";
import {
  backboneSha256,
  type RewardModelConfig,
  RM_FORMAT,
  RM_FORMAT_VERSION,
  saveRewardModel,
} from "../model/reward-model.js";
import { hashString, Rng } from "../model/rng.js";
import { tokenizerOf } from "../model/tokenizer.js";
import { pairwiseAccuracy } from "./bradley-terry.js";
import type { PreferenceLabel } from "./preference-labels.js";
import {
  type HeadTrainOptions,
  headRewards,
  type PairFeatures,
  type RewardHead,
  trainRewardHead,
} from "./reward-head.js";

/**
 * The labels split by prompt: the distinct prompts in a seeded shuffle, the first
 * round(share · prompts) held out, so no held-out prompt's completions were trained on.
 */
export function splitByPrompt(
  labels: readonly PreferenceLabel[],
  share: number,
  seed: number,
): { train: PreferenceLabel[]; heldOut: PreferenceLabel[] } {
  if (!(share >= 0 && share < 1)) throw new ValidationError("heldOut", `must be in [0, 1), got ${share}`);
  const prompts = [...new Set(labels.map((l) => l.prompt))].sort();
  const rng = new Rng(seed, hashString("held-out-prompts"));
  for (let i = prompts.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [prompts[i], prompts[j]] = [prompts[j] as string, prompts[i] as string];
  }
  const held = new Set(prompts.slice(0, Math.round(share * prompts.length)));
  return {
    train: labels.filter((l) => !held.has(l.prompt)),
    heldOut: labels.filter((l) => held.has(l.prompt)),
  };
}

/** The backbone's features of the chosen and rejected completions. */
export function pairFeatures(backbone: CausalLM, labels: readonly PreferenceLabel[]): PairFeatures {
  return {
    chosen: pooledFeatures(
      backbone,
      labels.map((l) => ({ prompt: l.prompt, completion: l.chosen })),
    ),
    rejected: pooledFeatures(
      backbone,
      labels.map((l) => ({ prompt: l.prompt, completion: l.rejected })),
    ),
  };
}

/** What a training is given besides the labels. */
export interface RewardModelTraining {
  backbone: CausalLM;
  /** Where the backbone was loaded from (recorded relative to `outDir`, its SHA-256 checked at load). */
  backbonePath: string;
  labelsFile: string;
  outDir: string;
  heldOutShare: number;
  head: Omit<HeadTrainOptions, "onEpoch">;
  log: (line: string) => void;
}

/** What a training produced. */
export interface TrainedRewardModel {
  head: RewardHead;
  config: RewardModelConfig;
  trainAccuracy: number;
  heldOutAccuracy: number | null;
}

/** Trains and saves a reward model on `labels` (see the module comment). */
export function trainRewardModel(
  labels: readonly PreferenceLabel[],
  o: RewardModelTraining,
): TrainedRewardModel {
  const { train, heldOut } = splitByPrompt(labels, o.heldOutShare, o.head.seed);
  if (train.length === 0) throw new ValidationError("labels", "every pair is held out: lower --held-out");
  o.log(`train-rm: ${train.length} training pairs, ${heldOut.length} held-out pairs (split by prompt)`);
  const t0 = performance.now();
  const trainF = pairFeatures(o.backbone, train);
  const heldF = pairFeatures(o.backbone, heldOut);
  o.log(
    `train-rm: features of ${2 * labels.length} completions in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const head = trainRewardHead(trainF, heldF, {
    ...o.head,
    onEpoch: (epoch, loss, tr, ho) =>
      o.log(
        `epoch ${epoch}/${o.head.epochs}: loss ${loss.toFixed(4)}, train accuracy ${(tr * 100).toFixed(1)}%, held-out accuracy ${Number.isNaN(ho) ? "n/a" : `${(ho * 100).toFixed(1)}%`}`,
      ),
  });
  const acc = (f: PairFeatures) =>
    pairwiseAccuracy(headRewards(head, f.chosen), headRewards(head, f.rejected));
  const trainAccuracy = acc(trainF);
  const heldOutAccuracy = heldOut.length > 0 ? acc(heldF) : null;
  const labellers = [...new Map(labels.map((l) => [JSON.stringify(l.labeller), l.labeller])).values()];
  const base: Omit<RewardModelConfig, "hash"> = {
    format: RM_FORMAT,
    version: RM_FORMAT_VERSION,
    backbone: {
      path: path.relative(path.resolve(o.outDir), path.resolve(o.backbonePath)) || ".",
      kind: modelKindOf(o.backbone.config),
      sha256: backboneSha256(o.backbonePath),
    },
    head: {
      type: "linear",
      pooling: "mean-over-completion",
      input: "logits+token-shares+log-length+count-steps",
      features: head.weight.length,
    },
    tokenizer: tokenizerOf(o.backbone).describe(),
    labels: {
      file: o.labelsFile,
      sha256: sha256Hex(Buffer.from(labels.map((l) => JSON.stringify(l)).join("\n"))),
      pairs: labels.length,
      trainPairs: train.length,
      heldOutPairs: heldOut.length,
      labellers,
    },
    training: { ...o.head, heldOutShare: o.heldOutShare },
    metrics: { trainAccuracy, heldOutAccuracy },
  };
  const hash = saveRewardModel(o.outDir, head, base);
  return { head, config: { ...base, hash }, trainAccuracy, heldOutAccuracy };
}
