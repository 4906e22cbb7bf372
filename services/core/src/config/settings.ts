/**
 * The table of every setting: its path in the config file, its command-line flag, its type and
 * its valid range. Loading, flag parsing, validation and `--help` all read this one table, so a
 * setting is declared once.
 */
import { BASELINE_KINDS } from "./defaults.js";

/** Kinds of values a setting can hold. */
export type SettingType = "int" | "number" | "string" | "strings";

/** One configurable setting. */
export interface Setting {
  /** Dotted path in the config (file and object), e.g. `run.steps`. */
  path: string;
  /** Long flag name without dashes, e.g. `steps`. */
  flag: string;
  type: SettingType;
  /** One-line help. */
  help: string;
  /** Inclusive bounds for numbers. */
  min?: number;
  max?: number;
  /** Exclusive upper bound for numbers. */
  below?: number;
  /** Allowed string values. */
  oneOf?: readonly string[];
  /** Pattern for string values (e.g. host:port). */
  pattern?: RegExp;
  /** Human description of the pattern. */
  patternHelp?: string;
}

const HOST_PORT = /^$|^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/;

/** Every setting; services and commands pick the ones they use. */
export const SETTINGS: readonly Setting[] = [
  { path: "run.steps", flag: "steps", type: "int", min: 1, max: 100_000, help: "optimizer steps" },
  {
    path: "run.promptsPerStep",
    flag: "prompts-per-step",
    type: "int",
    min: 1,
    max: 1024,
    help: "prompts per step",
  },
  {
    path: "run.samplesPerPrompt",
    flag: "samples-per-prompt",
    type: "int",
    min: 1,
    max: 64,
    help: "completions per prompt (G)",
  },
  { path: "run.learningRate", flag: "lr", type: "number", min: 1e-9, max: 1, help: "Adam learning rate" },
  { path: "run.gamma", flag: "gamma", type: "number", min: 0, max: 1, help: "discount γ of returns-to-go" },
  { path: "run.klCoef", flag: "kl-coef", type: "number", min: 0, max: 100, help: "β of the KL penalty" },
  { path: "run.entropyCoef", flag: "entropy-coef", type: "number", min: 0, max: 10, help: "entropy bonus" },
  {
    path: "run.maxGradNorm",
    flag: "max-grad-norm",
    type: "number",
    min: 0,
    max: 1e6,
    help: "clip (0 = off)",
  },
  {
    path: "run.baselineDecay",
    flag: "baseline-decay",
    type: "number",
    min: 0,
    below: 1,
    help: "baseline EMA decay",
  },
  {
    path: "run.baseline",
    flag: "baseline",
    type: "string",
    oneOf: BASELINE_KINDS,
    help: "advantage baseline",
  },
  {
    path: "run.klIn",
    flag: "kl-in",
    type: "string",
    oneOf: ["reward", "loss"],
    help: "KL in reward or loss",
  },
  {
    path: "run.klEstimator",
    flag: "kl-estimator",
    type: "string",
    oneOf: ["k1", "k3"],
    help: "sampled-token KL estimator",
  },
  {
    path: "run.klTarget",
    flag: "kl-target",
    type: "number",
    min: 0,
    max: 1000,
    help: "adaptive β target KL, nats/sample (0 = fixed β)",
  },
  {
    path: "run.klHorizon",
    flag: "kl-horizon",
    type: "number",
    min: 1,
    max: 1e9,
    help: "adaptive β horizon (samples)",
  },
  {
    path: "run.weightDecay",
    flag: "weight-decay",
    type: "number",
    min: 0,
    max: 10,
    help: "AdamW weight decay λ",
  },
  {
    path: "run.warmupSteps",
    flag: "warmup-steps",
    type: "int",
    min: 0,
    max: 100_000,
    help: "learning-rate warm-up steps",
  },
  {
    path: "run.lrDecay",
    flag: "lr-decay",
    type: "string",
    oneOf: ["none", "cosine"],
    help: "learning-rate decay after warm-up",
  },
  {
    path: "run.offPolicy",
    flag: "off-policy",
    type: "string",
    oneOf: ["none", "ppo-clip", "truncated"],
    help: "importance-ratio correction",
  },
  {
    path: "run.clipEpsilon",
    flag: "clip-epsilon",
    type: "number",
    min: 1e-6,
    below: 1,
    help: "PPO clip ε",
  },
  {
    path: "run.truncation",
    flag: "truncation",
    type: "number",
    min: 1,
    max: 1e6,
    help: "truncated-IS cap c of min(ρ, c)",
  },
  {
    path: "run.publishEvery",
    flag: "publish-every",
    type: "int",
    min: 1,
    max: 10_000,
    help: "steps per publish",
  },
  { path: "run.seed", flag: "seed", type: "int", min: 0, max: 2 ** 32 - 1, help: "run seed" },
  {
    path: "run.maxNewTokens",
    flag: "max-new-tokens",
    type: "int",
    min: 1,
    max: 4096,
    help: "tokens per sample",
  },
  {
    path: "run.temperature",
    flag: "temperature",
    type: "number",
    min: 0,
    max: 10,
    help: "sampling temperature",
  },
  { path: "run.topK", flag: "top-k", type: "int", min: 0, max: 100_000, help: "top-k (0 = off)" },
  { path: "run.topP", flag: "top-p", type: "number", min: 0, max: 1, help: "top-p (1 = off)" },
  { path: "run.prompts", flag: "prompt", type: "strings", help: "training prompt (repeatable)" },
  {
    path: "run.checkpointEvery",
    flag: "checkpoint-every",
    type: "int",
    min: 0,
    max: 100_000,
    help: "steps per resumable checkpoint (0 = only the last step)",
  },
  {
    path: "run.checkpointKeep",
    flag: "checkpoint-keep",
    type: "int",
    min: 0,
    max: 10_000,
    help: "newest step checkpoints kept (0 = all)",
  },
  {
    path: "services.natsUrl",
    flag: "nats",
    type: "string",
    pattern: /^$|^(nats|tls):\/\/[^\s]+$/,
    patternHelp: "nats://host:port",
    help: "NATS URL (default: embedded bus)",
  },
  {
    path: "services.feedbackAddress",
    flag: "feedback-address",
    type: "string",
    pattern: HOST_PORT,
    patternHelp: "host:port",
    help: "external FeedbackService address",
  },
  {
    path: "services.policyAddress",
    flag: "policy-address",
    type: "string",
    pattern: HOST_PORT,
    patternHelp: "host:port",
    help: "PolicyService address",
  },
  {
    path: "services.checkpoint",
    flag: "checkpoint",
    type: "string",
    help: "checkpoint to serve / start from",
  },
  {
    path: "services.backend",
    flag: "backend",
    type: "string",
    oneOf: ["auto", "tensorflow", "wasm", "cpu"],
    help: "compute backend",
  },
  {
    path: "services.rpcTimeoutMs",
    flag: "rpc-timeout-ms",
    type: "int",
    min: 1,
    max: 3_600_000,
    help: "rpc deadline",
  },
  {
    path: "services.stepTimeoutMs",
    flag: "step-timeout-ms",
    type: "int",
    min: 1,
    max: 86_400_000,
    help: "max wait for one step's trajectories",
  },
  { path: "out", flag: "out", type: "string", help: "output directory for checkpoints and metrics" },
];

/** Look a setting up by its flag name. */
export function settingByFlag(flag: string): Setting | undefined {
  return SETTINGS.find((s) => s.flag === flag);
}
