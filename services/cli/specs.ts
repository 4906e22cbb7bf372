/**
 * The command lines of every command, declared apart from what the commands do, so that
 * `rlaif --help`, `--help` and flag errors answer without loading TensorFlow.js, gRPC or NATS.
 */

import { RUN_FLAGS } from "../core/src/config/settings.js";
import { DEFAULT_CONFIG } from "../core/src/model/config.js";
import { DEFAULT_RNN_CONFIG } from "../core/src/model/rnn-config.js";
import { DEFAULT_SEQ2SEQ_CONFIG } from "../core/src/model/seq2seq-config.js";
import type { CommandSpec } from "./args.js";

/** What the model services need. */
const MODEL_FLAGS = ["checkpoint", "backend"] as const;

/** Timeouts of calls and steps. */
const TIMEOUT_FLAGS = ["rpc-timeout-ms", "step-timeout-ms"] as const;

/** The services `rlaif serve` can run. */
export const SERVICE_NAMES = ["policy", "rollout", "feedback", "optimizer"] as const;

/** `rlaif train`. */
export const trainSpec: CommandSpec = {
  name: "train",
  summary: "Run RLAIF training with all four services in this process (embedded bus unless --nats)",
  usage:
    "rlaif train [--config file] [flags] | rlaif train --resume <run dir | step-<n>.safetensors> [--steps n]",
  settings: [...RUN_FLAGS, ...MODEL_FLAGS, ...TIMEOUT_FLAGS, "nats", "feedback-address", "out"],
  flags: [
    { name: "json", type: "boolean", help: "print the RunSummary as JSON on stdout's last line" },
    {
      name: "resume",
      type: "string",
      help: "continue a run from its newest checkpoint (a run directory) or from a step-<n>.safetensors file, with its saved settings; --steps may raise the total",
    },
  ],
};

/** `rlaif serve`. */
export const serveSpec: CommandSpec = {
  name: "serve",
  summary: "Run one service (policy, rollout, feedback or optimizer) as its own gRPC server",
  usage: "rlaif serve <policy|rollout|feedback|optimizer> --port <n> [--nats url] [flags]",
  settings: [
    ...MODEL_FLAGS,
    ...TIMEOUT_FLAGS,
    ...RUN_FLAGS,
    "nats",
    "feedback-address",
    "policy-address",
    "out",
  ],
  flags: [
    { name: "port", type: "string", help: "port to listen on (0 picks a free one)" },
    { name: "host", type: "string", help: "interface to listen on (default 0.0.0.0)" },
  ],
  positionals: 1,
};

/** `rlaif up`. */
export const upSpec: CommandSpec = {
  name: "up",
  summary: "Start a local cluster (nats-server + one process per service) and train through it",
  usage: "rlaif up [--config file] [flags]",
  settings: [...RUN_FLAGS, ...MODEL_FLAGS, ...TIMEOUT_FLAGS, "feedback-address", "out"],
  flags: [{ name: "json", type: "boolean", help: "print the RunSummary as JSON on stdout's last line" }],
};

/** `rlaif pretrain`. */
export const pretrainSpec: CommandSpec = {
  name: "pretrain",
  summary:
    "Pre-train a policy (Transformer, GRU, LSTM or Seq2Seq) on the bundled Brown corpus and write a checkpoint",
  usage: "rlaif pretrain --out <file.safetensors> [flags]",
  settings: ["backend"],
  flags: [
    { name: "out", type: "string", help: "checkpoint file to write (required)" },
    {
      name: "model",
      type: "string",
      help: "model kind: transformer | gru | lstm | seq2seq (default transformer)",
    },
    { name: "steps", type: "string", help: "optimiser steps (default 1000)" },
    { name: "batch", type: "string", help: "rows per step (default 16)" },
    { name: "lr", type: "string", help: "peak learning rate (default 0.003)" },
    { name: "seed", type: "string", help: "seed of weights and data order (default 1)" },
    { name: "context", type: "string", help: `context length (default ${DEFAULT_CONFIG.contextLength})` },
    {
      name: "d-model",
      type: "string",
      help: `model width, the embedding size for gru/lstm (default ${DEFAULT_CONFIG.dModel}; gru/lstm ${DEFAULT_RNN_CONFIG.dModel})`,
    },
    {
      name: "hidden",
      type: "string",
      help: `gru/lstm/seq2seq hidden state size (default ${DEFAULT_RNN_CONFIG.hidden}; seq2seq ${DEFAULT_SEQ2SEQ_CONFIG.hidden})`,
    },
    {
      name: "layers",
      type: "string",
      help: `layers (default ${DEFAULT_CONFIG.nLayers}; gru/lstm ${DEFAULT_RNN_CONFIG.nLayers})`,
    },
    { name: "heads", type: "string", help: `attention heads (default ${DEFAULT_CONFIG.nHeads})` },
    { name: "eval-every", type: "string", help: "held-out evaluation interval in steps (default 100)" },
    { name: "samples", type: "string", help: "samples to print at the end (default 6)" },
  ],
};

/** `rlaif sample`. */
export const sampleSpec: CommandSpec = {
  name: "sample",
  summary: "Complete prompts from a file with a checkpoint (compare policies before and after training)",
  usage:
    "rlaif sample --checkpoint <file> --prompts <file, one prompt a line> [--stop <text>]... [--json] [flags]",
  settings: ["checkpoint", "backend", "max-new-tokens", "temperature", "top-k", "top-p", "seed"],
  flags: [
    { name: "prompts", type: "string", help: "file with one prompt a line (required)" },
    { name: "samples", type: "string", help: "completions per prompt, 1..64 (default 1)" },
    {
      name: "stop",
      type: "string",
      multiple: true,
      help: "stop sequence (repeatable, up to 16, 1..128 bytes; e.g. --stop $'\\n'): a completion ends with it, its text leaves it out",
    },
    { name: "json", type: "boolean", help: "one JSON object per prompt per line on stdout" },
  ],
};
