/**
 * The command lines of every command, declared apart from what the commands do, so that
 * `rlaif --help`, `--help` and flag errors answer without loading TensorFlow.js, gRPC or NATS.
 */

import { SCORER_FLAGS } from "../core/src/config/scorer-flags.js";
import { RUN_FLAGS } from "../core/src/config/settings.js";
import { DEFAULT_RNN_CONFIG } from "../core/src/model/rnn-config.js";
import { DEFAULT_SEQ2SEQ_CONFIG } from "../core/src/model/seq2seq-config.js";
import { DEFAULT_TRANSFORMER_CONFIG as DEFAULT_CONFIG } from "../core/src/model/transformer-config.js";
import type { CommandFlag, CommandSpec } from "./args.js";

/** What the model services need. */
const MODEL_FLAGS = ["checkpoint", "model", "backend"] as const;

/** Timeouts of calls and steps. */
const TIMEOUT_FLAGS = ["rpc-timeout-ms", "feedback-timeout-ms", "step-timeout-ms"] as const;

/** How much work a Policy replica batches and queues. */
const POLICY_FLAGS = ["policy-batch-rows", "policy-queue-rows"] as const;

// --- Signed weights: flags of the Optimizer (signing key, retention, full every) and the Policy (verify key) ---
/** The Optimizer's: the key that signs each weights manifest, how many versions stay stored, how often one is full. */
const WEIGHTS_SIGN_FLAGS = ["weights-signing-key", "weights-retention", "weights-full-every"] as const;
/** The Policy's: the public key weights must be signed with. */
const WEIGHTS_VERIFY_FLAGS = ["weights-verify-key"] as const;
// --- end of signed weights ---
/** The Policy's OpenAI-compatible HTTP API (policy/openai-http.ts): its port, token and model id. */
const OPENAI_FLAGS = ["openai-port", "openai-token", "openai-token-file", "openai-model"] as const;
/** TLS of a gRPC server (and of its clients): PEM files, mTLS. */
const TLS_FLAGS = ["tls-cert", "tls-key", "tls-ca", "tls-client-auth"] as const;

/** TLS of a client of the Optimizer (a CLI command): the CA to check it, a certificate under mTLS. */
const TLS_CLIENT_FLAGS = ["tls-ca", "tls-cert", "tls-key"] as const;

/** The control token: required by the Optimizer's control RPCs, sent by the CLI. */
const TOKEN_FLAGS = ["control-token", "control-token-file"] as const;

/** A service's own NATS user. */
const NATS_AUTH_FLAGS = ["nats-user", "nats-password", "nats-creds"] as const;

/** The services `rlaif serve` can run. */
export const SERVICE_NAMES = ["policy", "rollout", "feedback", "optimizer"] as const;

/** Held-out prompts `rlaif train` evaluates at its end when `--eval-prompts` is not given. */
export const DEFAULT_EVAL_PROMPTS = 16;
/** Most `--eval-prompts` accepts: beyond it the evaluation takes longer than a short run itself. */
export const MAX_EVAL_PROMPTS = 256;
/** Samples per held-out prompt (the reward of one sample per prompt is too noisy to compare). */
export const EVAL_SAMPLES = 4;

/** `rlaif train`. */
export const trainSpec: CommandSpec = {
  name: "train",
  summary: "Run RLAIF training with all four services in this process (embedded bus unless --nats)",
  usage:
    "rlaif train [--config file] [flags] | rlaif train --resume <run dir | step-<n>.safetensors> [--steps n]",
  settings: [
    ...RUN_FLAGS,
    ...MODEL_FLAGS,
    ...TIMEOUT_FLAGS,
    ...POLICY_FLAGS,
    "rollout-concurrency",
    "nats",
    ...NATS_AUTH_FLAGS,
    "feedback-address",
    ...SCORER_FLAGS,
    "policy-in",
    "learner-in",
    ...WEIGHTS_SIGN_FLAGS,
    ...WEIGHTS_VERIFY_FLAGS,
    "out",
    // The process's ops HTTP port (one /metrics for all four services), log format and OTLP
    // tracing, as `rlaif serve` has them (cli/train-telemetry.ts).
    "metrics-port",
    "log-format",
    "otlp-endpoint",
    "otlp-headers",
  ],
  flags: [
    { name: "json", type: "boolean", help: "print the RunSummary as JSON on stdout's last line" },
    {
      name: "resume",
      type: "string",
      help: "continue a run from its newest checkpoint (a run directory) or from a step-<n>.safetensors file, with its saved settings; --steps may raise the total",
    },
    {
      name: "eval-prompts",
      type: "string",
      help: `held-out prompts (× ${EVAL_SAMPLES} samples) on which the starting and the trained policy are compared at the end, reported on stderr and in <out>/<run id>/held-out.json; 0..${MAX_EVAL_PROMPTS}, 0 skips (default ${DEFAULT_EVAL_PROMPTS})`,
    },
  ],
  examples: [
    "rlaif train --steps 20",
    "rlaif train --config run.yaml --steps 40 --json | tail -1",
    "rlaif train --resume runs/<run id> --steps 40        # continue the run up to step 40",
    "rlaif train --resume runs/<run id>/step-000010.safetensors --steps 40",
    "rlaif train --feedback-address 127.0.0.1:50070       # score with your own FeedbackService",
  ],
};

/** Flags every `rlaif serve <service>` takes. */
const LISTEN_FLAGS = [
  { name: "port", type: "string", help: "port to listen on (required; 0 picks a free one)" },
  {
    name: "host",
    type: "string",
    help: "interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface, as a pod needs)",
  },
] as const;

/** One service of `rlaif serve`, with the flags its main reads. */
function serveVariant(
  name: (typeof SERVICE_NAMES)[number],
  summary: string,
  usage: string,
  settings: string[],
  flags: readonly CommandFlag[] = [],
): CommandSpec {
  return {
    name: `serve ${name}`,
    summary,
    usage: `rlaif serve ${name} --port <n> ${usage}`,
    // Every service: the ops HTTP port (core/src/ops/ops-http.ts), log format and OTLP tracing
    // (core/src/telemetry/).
    settings: [...settings, "metrics-port", "log-format", "otlp-endpoint", "otlp-headers"],
    flags: [...LISTEN_FLAGS, ...flags],
    positionals: 1,
  };
}

/** `rlaif serve`: one variant per service, each listing only the flags that service uses. */
export const serveSpec: CommandSpec = {
  name: "serve",
  summary: "Run one service (policy, rollout, feedback or optimizer) as its own gRPC server",
  usage: "rlaif serve <policy|rollout|feedback|optimizer> --port <n> [flags]",
  settings: [],
  positionals: 1,
  variants: {
    policy: serveVariant(
      "policy",
      "Serve the Policy (Generate, log-probs) from a checkpoint; with --nats it follows the weights the Optimizer publishes",
      "[--checkpoint file] [--nats url] [flags]",
      [
        ...MODEL_FLAGS,
        ...POLICY_FLAGS,
        "nats",
        ...WEIGHTS_VERIFY_FLAGS,
        ...NATS_AUTH_FLAGS,
        ...TLS_FLAGS,
        ...OPENAI_FLAGS,
      ],
    ),
    rollout: serveVariant(
      "rollout",
      "Serve a Rollout worker: pulls prompt jobs from NATS, samples from the Policy, scores with the FeedbackService",
      "--nats <url> --policy-address <host:port> --feedback-address <host:port> [flags]",
      [
        "nats",
        "policy-address",
        "feedback-address",
        "rpc-timeout-ms",
        "feedback-timeout-ms",
        "rollout-concurrency",
        "rollout-retry-ms",
        "rollout-max-deliver",
        ...NATS_AUTH_FLAGS,
        ...TLS_FLAGS,
      ],
    ),
    feedback: serveVariant(
      "feedback",
      "Serve the built-in FeedbackService (AFINN-165 scorer, weighted rules with --feedback-rules, a learned reward model with --reward-model, an LLM judge with --judge-url, or a weighted mix of them)",
      "[--host address] [--feedback-rules rule:weight,…] [--reward-model dir [--reward-model-weight w]] [--judge-url url --judge-model m [--judge-weight w] [--judge-mode completions|chat] [--judge-rubric-file f] [--judge-api-key-env VAR | --judge-api-key-file f]]",
      [...SCORER_FLAGS, "backend", ...TLS_FLAGS],
    ),
    optimizer: serveVariant(
      "optimizer",
      "Serve the Optimizer: runs started with StartRun (rlaif run) train over NATS; run flags are the defaults for fields a StartRun leaves unset",
      "--nats <url> [--checkpoint file] [--out dir] [--feedback-address host:port (recorded in each run's config.json)] [flags]",
      [
        ...MODEL_FLAGS,
        "nats",
        "out",
        "step-timeout-ms",
        "feedback-address",
        "learner-in",
        ...WEIGHTS_SIGN_FLAGS,
        ...RUN_FLAGS,
        ...NATS_AUTH_FLAGS,
        ...TLS_FLAGS,
        ...TOKEN_FLAGS,
      ],
      [
        {
          name: "resume-unfinished",
          type: "boolean",
          help: "at start, resume the newest run under --out that did not end (the one this Optimizer was training when its process died) from its last step checkpoint; off unless given (rlaif up gives it to a restarted Optimizer)",
        },
      ],
    ),
  },
  examples: [
    "rlaif serve feedback  --port 50061",
    "rlaif serve policy    --port 50062 --nats nats://127.0.0.1:4222",
    "rlaif serve rollout   --port 50063 --nats nats://127.0.0.1:4222 --policy-address 127.0.0.1:50062 --feedback-address 127.0.0.1:50061",
    "rlaif serve optimizer --port 50064 --nats nats://127.0.0.1:4222 --feedback-address 127.0.0.1:50061",
  ],
};

/** `rlaif up`. */
export const upSpec: CommandSpec = {
  name: "up",
  summary: "Start a local cluster (nats-server + one process per service) and train through it",
  usage: "rlaif up [--config file] [flags]",
  settings: [
    ...RUN_FLAGS,
    ...MODEL_FLAGS,
    ...TIMEOUT_FLAGS,
    ...POLICY_FLAGS,
    "rollout-concurrency",
    "feedback-address",
    // Handed to the Feedback process it starts (cluster/local-cluster.ts).
    ...SCORER_FLAGS,
    ...WEIGHTS_SIGN_FLAGS,
    ...WEIGHTS_VERIFY_FLAGS,
    "out",
    ...TLS_FLAGS,
    ...TOKEN_FLAGS,
    // Log format and tracing, handed to every process it starts (cluster/local-cluster.ts).
    "log-format",
    "otlp-endpoint",
    "otlp-headers",
  ],
  flags: [{ name: "json", type: "boolean", help: "print the RunSummary as JSON on stdout's last line" }],
};

/** Where `rlaif status` looks when no --optimizer is given: the port the README's examples use. */
export const DEFAULT_OPTIMIZER_ADDRESS = "127.0.0.1:50064";

const OPTIMIZER_FLAG = {
  name: "optimizer",
  type: "string",
  help: "host:port of the Optimizer (rlaif serve optimizer)",
} as const;

/** `rlaif run`. */
export const runSpec: CommandSpec = {
  name: "run",
  summary: "Start a run on a cluster you started (rlaif serve …) and watch it, as train does",
  usage:
    "rlaif run --optimizer <host:port> [run flags] [--json] | rlaif run --optimizer <host:port> --resume <run id> [--steps n]",
  settings: [...RUN_FLAGS, "rpc-timeout-ms", ...TLS_CLIENT_FLAGS, ...TOKEN_FLAGS],
  flags: [
    { ...OPTIMIZER_FLAG, help: `${OPTIMIZER_FLAG.help} (required)` },
    { name: "json", type: "boolean", help: "print the RunSummary as JSON on stdout's last line" },
    { name: "run-id", type: "string", help: "id of the new run (default: generated)" },
    {
      name: "resume",
      type: "string",
      help: "continue a run from its checkpoint: a run id, or a run directory or step-<n>.safetensors inside the Optimizer's --out; --steps may raise the total",
    },
  ],
  examples: [
    "rlaif run --optimizer 127.0.0.1:50064 --steps 20",
    "rlaif run --optimizer 127.0.0.1:50064 --steps 20 --lr 3e-4 --json | tail -1",
    "rlaif run --optimizer 127.0.0.1:50064 --resume <run id> --steps 40",
  ],
};

/** `rlaif status`. */
export const statusSpec: CommandSpec = {
  name: "status",
  summary: "Show the runs of an Optimizer, or one run's state, step and metrics",
  usage: "rlaif status [--optimizer host:port] [run id] [--json]",
  settings: ["rpc-timeout-ms", ...TLS_CLIENT_FLAGS, ...TOKEN_FLAGS],
  flags: [
    { ...OPTIMIZER_FLAG, help: `${OPTIMIZER_FLAG.help} (default ${DEFAULT_OPTIMIZER_ADDRESS})` },
    { name: "json", type: "boolean", help: "print the answer as JSON on stdout" },
  ],
  optionalPositionals: 1,
};

/** `rlaif cancel`. */
export const cancelSpec: CommandSpec = {
  name: "cancel",
  summary:
    "Cancel a run on an Optimizer (its last step's checkpoint stays, resumable with rlaif run --resume)",
  usage: "rlaif cancel --optimizer <host:port> [run id] [--json]",
  settings: ["rpc-timeout-ms", ...TLS_CLIENT_FLAGS, ...TOKEN_FLAGS],
  flags: [
    { ...OPTIMIZER_FLAG, help: `${OPTIMIZER_FLAG.help} (required)` },
    { name: "json", type: "boolean", help: "print the answer as JSON on stdout" },
  ],
  optionalPositionals: 1,
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
    {
      name: "vocab",
      type: "string",
      help: "train a byte-level BPE of this many ids (257..30000) on the corpus first; the model is then a GPT-2 written as a Hugging Face directory at --out",
    },
    {
      name: "from",
      type: "string",
      help: "continue pre-training this GPT-2 model directory (its shape and tokenizer) instead of a fresh model; --out names a directory",
    },
  ],
};

/** `rlaif export`. */
export const exportSpec: CommandSpec = {
  name: "export",
  summary: "Write a checkpoint as a model directory (Hugging Face layout for models brought with --model)",
  usage: "rlaif export --checkpoint <run checkpoint> --out <dir>",
  settings: ["checkpoint"],
  flags: [{ name: "out", type: "string", help: "directory to write (required)" }],
  examples: ["rlaif export --checkpoint runs/<run id>/final.safetensors --out exported/"],
};

/** `rlaif sample`. */
export const sampleSpec: CommandSpec = {
  name: "sample",
  summary: "Complete prompts from a file with a checkpoint (compare policies before and after training)",
  usage:
    "rlaif sample --checkpoint <file> --prompts <file, one prompt a line> [--stop <text>]... [--json] [flags]",
  settings: ["checkpoint", "model", "backend", "max-new-tokens", "temperature", "top-k", "top-p", "seed"],
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
  examples: [
    "rlaif sample --prompts examples/prompts.txt",
    "rlaif sample --checkpoint runs/<run id>/final.safetensors --prompts examples/prompts.txt --json",
  ],
};

/** `rlaif feedback-check`: the conformance suite of docs/feedback-contract.md. */
export const feedbackCheckSpec: CommandSpec = {
  name: "feedback-check",
  summary: "Check a FeedbackService against the feedback contract (a PASS/FAIL row per rule)",
  usage:
    "rlaif feedback-check <host:port> [--tls-ca file [--tls-cert file --tls-key file]] [--json] [--timeout-ms n]",
  settings: [...TLS_CLIENT_FLAGS],
  flags: [
    { name: "json", type: "boolean", help: "print the rows as JSON on stdout" },
    { name: "timeout-ms", type: "string", help: "deadline of each call in ms, 1..600000 (default 10000)" },
  ],
  positionals: 1,
  examples: ["rlaif feedback-check 127.0.0.1:50053"],
};

/** `rlaif keygen`. */
export const keygenSpec: CommandSpec = {
  name: "keygen",
  summary:
    "Write an Ed25519 key pair for signed weights: weights-signing.pem (Optimizer) and weights-verify.pem (Policy)",
  usage: "rlaif keygen --out <dir>",
  settings: [],
  flags: [
    {
      name: "out",
      type: "string",
      help: "directory to write the two key files into (created, mode 0700; existing key files are never overwritten)",
    },
  ],
  examples: [
    "rlaif keygen --out keys/",
    "rlaif serve optimizer --port 50064 --nats nats://127.0.0.1:4222 --weights-signing-key keys/weights-signing.pem",
    "rlaif serve policy    --port 50062 --nats nats://127.0.0.1:4222 --weights-verify-key keys/weights-verify.pem",
  ],
};

/** `rlaif nats-init` (commands/nats-init.ts): the streams, buckets and consumer of a deployment, ahead of the services. */
export const natsInitSpec: CommandSpec = {
  name: "nats-init",
  summary:
    "Create (idempotently) the JetStream streams, KV and Object Store buckets and the Rollout's consumer on a NATS server",
  usage: "rlaif nats-init --nats <url> [--part streams|consumer|all] [--replicas n]",
  settings: ["nats", ...NATS_AUTH_FLAGS],
  flags: [
    {
      name: "part",
      type: "string",
      help: "streams (as the optimizer user: streams and buckets), consumer (as the rollout user: its durable consumer) or all (default; needs both grants)",
    },
    {
      name: "replicas",
      type: "string",
      help: "JetStream replicas of every stream and bucket, 1-5 (3 on a 3-server cluster); existing ones are updated to it. Default: the server's (1)",
    },
  ],
  examples: [
    "rlaif nats-init --nats nats://127.0.0.1:4222",
    "RLAIF_NATS_USER=optimizer RLAIF_NATS_PASSWORD=... rlaif nats-init --nats nats://nats:4222 --part streams --replicas 3",
    "RLAIF_NATS_USER=rollout RLAIF_NATS_PASSWORD=... rlaif nats-init --nats nats://nats:4222 --part consumer",
  ],
};

/** `rlaif report` (commands/run-report.ts; commands/report.ts prints a RunSummary, a different thing). */
export const reportSpec: CommandSpec = {
  name: "report",
  summary:
    "Write a run's report: one self-contained HTML page of its curves, samples, held-out results and provenance",
  usage: "rlaif report <run dir> [--out file.html]",
  settings: [],
  positionals: 1,
  flags: [
    {
      name: "out",
      type: "string",
      help: "HTML file to write (default <run dir>/report.html); opens offline, nothing is fetched",
    },
  ],
  examples: ["rlaif report runs/<run id>", "rlaif report runs/<run id> --out /tmp/run.html"],
};
