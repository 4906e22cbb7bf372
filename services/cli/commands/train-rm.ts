/**
 * `rlaif train-rm`: a Bradley–Terry reward model from preference labels (rlaif label) over a
 * frozen policy backbone, printing each epoch's train and held-out pairwise accuracy on stderr
 * and writing the directory `rlaif serve feedback --reward-model` and `rlaif train
 * --reward-model` load (docs/reward-model.md).
 */
import { ConfigError } from "../../core/src/errors.js";
import { readLabels } from "../../core/src/learn/preference-labels.js";
import { DEFAULT_HEAD_TRAINING } from "../../core/src/learn/reward-head.js";
import { trainRewardModel } from "../../core/src/learn/reward-model-training.js";
import { startBackend } from "../../core/src/model/backend.js";
import { loadModel } from "../../core/src/model/model-source.js";
import type { CommandRun } from "../args.js";
import { requireCheckpoint, requireModelDir } from "./shared-flags.js";

/** Default backbone: the small pretrained GRU (fast features on two cores). */
export const DEFAULT_RM_BACKBONE = "checkpoints/gru/model.safetensors";

function numberFlag(
  raw: unknown,
  name: string,
  ok: (x: number) => boolean,
  range: string,
  fallback: number,
): number {
  if (raw === undefined) return fallback;
  const x = Number(raw);
  if (!ok(x)) throw new ConfigError(`--${name} must be ${range}, got "${String(raw)}"`);
  return x;
}

/** What `rlaif train-rm` does (its command line is declared in rm-specs.ts). */
export const trainRmCommand: CommandRun = {
  async run({ config, flags }) {
    if (typeof flags.labels !== "string")
      throw new ConfigError("--labels <labels.jsonl> is required (rlaif label --out)");
    if (typeof flags.out !== "string") throw new ConfigError("--out <dir> is required");
    if (typeof flags.backbone === "string" && typeof flags["hf-model"] === "string")
      throw new ConfigError("--backbone and --hf-model both name the backbone: pass one of them");
    let backbonePath = DEFAULT_RM_BACKBONE;
    if (typeof flags["hf-model"] === "string") {
      backbonePath = flags["hf-model"];
      requireModelDir(backbonePath, "--hf-model");
    } else if (typeof flags.backbone === "string") backbonePath = flags.backbone;
    requireCheckpoint(backbonePath);
    const heldOutShare = numberFlag(
      flags["held-out"],
      "held-out",
      (x) => x >= 0 && x <= 0.9,
      "a number in 0..0.9",
      0.2,
    );
    const epochs = numberFlag(
      flags.epochs,
      "epochs",
      (x) => Number.isInteger(x) && x >= 1 && x <= 1000,
      "a whole number in 1..1000",
      DEFAULT_HEAD_TRAINING.epochs,
    );
    const learningRate = numberFlag(
      flags.lr,
      "lr",
      (x) => x > 0 && x < 10,
      "a number in (0, 10)",
      DEFAULT_HEAD_TRAINING.learningRate,
    );
    const labels = readLabels(flags.labels);
    await startBackend(config.services.backend);
    const backbone = await loadModel(backbonePath);
    try {
      const log = (line: string) => process.stderr.write(`${line}\n`);
      const r = trainRewardModel(labels, {
        backbone,
        backbonePath,
        labelsFile: flags.labels,
        outDir: flags.out,
        heldOutShare,
        head: { ...DEFAULT_HEAD_TRAINING, epochs, learningRate, seed: config.run.seed },
        log,
      });
      const held = r.heldOutAccuracy === null ? "n/a" : `${(r.heldOutAccuracy * 100).toFixed(1)}%`;
      log(
        `train-rm: train accuracy ${(r.trainAccuracy * 100).toFixed(1)}%, held-out accuracy ${held}; hash ${r.config.hash}`,
      );
      process.stdout.write(`${flags.out}\n`);
    } finally {
      backbone.dispose();
    }
  },
};
