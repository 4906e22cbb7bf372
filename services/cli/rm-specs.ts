/**
 * The command lines of `rlaif label` and `rlaif train-rm` (the reward-model pipeline,
 * docs/reward-model.md), declared apart from what they do like specs.ts, so their `--help`
 * answers without loading TensorFlow.js.
 */
import type { CommandSpec } from "./args.js";

/** Most `--pairs` accepts: each pair is two samples plus two scores. */
export const MAX_LABEL_PAIRS = 100_000;

/** `rlaif label`. */
export const labelSpec: CommandSpec = {
  name: "label",
  summary:
    "Sample two completions per prompt from a policy and let an AI labeller prefer one (JSONL preference labels)",
  usage:
    "rlaif label --checkpoint <policy> [--prompts file] --pairs N --out labels.jsonl [--labeller builtin|host:port] [--seed n]",
  settings: [
    "checkpoint",
    "model",
    "backend",
    "max-new-tokens",
    "temperature",
    "top-k",
    "top-p",
    "seed",
    "feedback-rules",
    "feedback-timeout-ms",
  ],
  flags: [
    {
      name: "prompts",
      type: "string",
      help: "file with one prompt a line (default: the corpus prompts a run trains on, so the held-out report's prompts stay unseen)",
    },
    {
      name: "pairs",
      type: "string",
      help: `prompts to sample a pair for, 1..${MAX_LABEL_PAIRS} (required); ties and unscored pairs are skipped`,
    },
    { name: "out", type: "string", help: "JSONL file to write, one label a line (required)" },
    {
      name: "labeller",
      type: "string",
      help: "builtin (the rule scorer, --feedback-rules) or host:port of a FeedbackService (default builtin)",
    },
  ],
  examples: [
    "rlaif label --checkpoint checkpoints/gru/model.safetensors --pairs 2000 --out labels.jsonl",
    "rlaif label --pairs 500 --labeller 127.0.0.1:50061 --out labels.jsonl",
  ],
};

/** `rlaif train-rm`. */
export const trainRmSpec: CommandSpec = {
  name: "train-rm",
  summary: "Train a Bradley–Terry reward model on preference labels (rlaif label) over a policy backbone",
  usage:
    "rlaif train-rm --labels labels.jsonl --out <dir> [--backbone <checkpoint> | --hf-model <dir>] [--held-out 0.2] [--epochs n] [--lr x] [--seed n]",
  settings: ["backend", "seed"],
  flags: [
    { name: "labels", type: "string", help: "JSONL preference labels (required)" },
    { name: "out", type: "string", help: "directory to write the reward model into (required)" },
    {
      name: "backbone",
      type: "string",
      help: "policy checkpoint file or model directory whose outputs the head reads (default checkpoints/gru/model.safetensors)",
    },
    {
      name: "hf-model",
      type: "string",
      help: "a Hugging Face model directory as the backbone (instead of --backbone)",
    },
    {
      name: "held-out",
      type: "string",
      help: "share of the prompts (0..0.9) whose pairs are held out (default 0.2)",
    },
    { name: "epochs", type: "string", help: "passes over the training pairs, 1..1000 (default 30)" },
    { name: "lr", type: "string", help: "Adam learning rate of the head (default 0.01)" },
  ],
  examples: ["rlaif train-rm --labels labels.jsonl --out rm/ --backbone checkpoints/gru/model.safetensors"],
};
