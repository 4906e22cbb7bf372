/**
 * The one schema of every setting: name, type, default, range or choices, unit, doc line, CLI
 * flag, config-file key and `rlaif.common.v1.RunConfig` field. Everything else derives from it:
 * the defaults ({@link defaultConfig}), the CLI flags and `--help` (cli/args.ts), config-file
 * validation (load-config.ts), the gRPC rules of `StartRun.config` (grpc/rules.ts), both
 * RunConfig ↔ settings mappings (run-config.ts) and the README's settings table
 * (scripts/settings-table.ts). Why one table: a limit declared twice drifts (the CLI once bounded
 * β by 100 while gRPC took any value), and a caller must meet the same rule whichever way in.
 */

import { fileURLToPath } from "node:url";
import type { DescEnum } from "@bufbuild/protobuf";
import {
  BaselineSchema,
  KlEstimatorSchema,
  KlInSchema,
  LrDecaySchema,
  OffPolicySchema,
  RewardNormSchema,
} from "../../gen/rlaif/common/v1/types_pb.js";
import { setPath } from "./object-path.js";

/** Kinds of values a setting can hold. */
export type SettingType = "int" | "number" | "string" | "strings";

/** One configurable setting, as declared below. */
export interface Setting<T = unknown> {
  /** Dotted key in the config (file and object), e.g. `run.steps`. */
  readonly path: string;
  /** Long flag name without dashes, e.g. `steps`. */
  readonly flag: string;
  readonly type: SettingType;
  /** The value when neither a config file nor a flag nor a RunConfig field sets it. */
  readonly default: T;
  /** One-line help (CLI `--help` and the README table). */
  readonly help: string;
  /** Unit of a number, e.g. `steps`, `nats/sample`, `ms`. */
  readonly unit?: string;
  /** Inclusive lower bound. */
  readonly min?: number;
  /** Exclusive lower bound. */
  readonly above?: number;
  /** Inclusive upper bound. */
  readonly max?: number;
  /** Exclusive upper bound. */
  readonly below?: number;
  /** Allowed string values. */
  readonly oneOf?: readonly string[];
  /** Pattern for string values (e.g. host:port), with its human description. */
  readonly pattern?: RegExp;
  readonly patternHelp?: string;
  /** A file-system path: relative values in a config file resolve against the file's folder. */
  readonly isPath?: boolean;
  /** Most items of a list, and the most UTF-8 bytes of each (non-empty) item. */
  readonly maxItems?: number;
  readonly maxItemBytes?: number;
  /**
   * Field of `rlaif.common.v1.RunConfig` (camelCase path, e.g. `klCoef`, `sampling.topP`);
   * absent for settings that only the CLI and config file have (where services are).
   */
  readonly proto?: string;
  /** The proto enum of a choice: value `<ENUM>_<CHOICE>` (e.g. `BASELINE_MOVING_AVERAGE`) is choice `moving-average`. */
  readonly protoEnum?: DescEnum;
}

type Spec<T> = Omit<Setting<T>, "path" | "type">;

function int(s: Spec<number>): Setting<number> {
  return { ...s, path: "", type: "int" };
}
function num(s: Spec<number>): Setting<number> {
  return { ...s, path: "", type: "number" };
}
function text(s: Spec<string>): Setting<string> {
  return { ...s, path: "", type: "string" };
}
function choice<const C extends readonly string[]>(oneOf: C, s: Spec<C[number]>): Setting<C[number]> {
  return { ...s, oneOf, path: "", type: "string" };
}
function texts(s: Spec<string[]>): Setting<string[]> {
  return { ...s, path: "", type: "strings" };
}

/** Baselines of the advantages (see learn/advantages.ts). */
export const BASELINE_KINDS = ["none", "moving-average", "rloo", "group", "batch"] as const;
/** One of {@link BASELINE_KINDS}. */
export type BaselineKind = (typeof BASELINE_KINDS)[number];

/** Repository root, so defaults resolve no matter which directory the CLI runs from. */
export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/**
 * The pretrained policy committed with the project (produced by `rlaif pretrain --vocab`): a
 * GPT-2 with its own BPE tokenizer, as a Hugging Face model directory.
 */
export const DEFAULT_CHECKPOINT = `${REPO_ROOT}checkpoints/default`;

const HOST_PORT = /^$|^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/;

/**
 * Hyperparameters of one training run (`run.*` in a config file, `RunConfig` over gRPC). The
 * defaults are sized for the embedded quick start and were measured on the learning benchmark
 * (bench/learning.ts); each says why it has its value.
 */
const RUN = {
  /**
   * 50: the quick start's run. On the GPT-2 default 20 steps moved the held-out reward by +0.2 std
   * of the start (positive samples 22% → 33%), 50 steps by +0.9 std (22% → 61%), in 78 s on 2 cores.
   */
  steps: int({
    flag: "steps",
    default: 50,
    min: 1,
    max: 100_000,
    unit: "steps",
    help: "optimizer steps",
    proto: "steps",
  }),
  promptsPerStep: int({
    flag: "prompts-per-step",
    default: 8,
    min: 1,
    max: 1024,
    help: "prompts per step",
    proto: "promptsPerStep",
  }),
  /** G = 8 gives the RLOO baseline 7 other samples of the same prompt. */
  samplesPerPrompt: int({
    flag: "samples-per-prompt",
    default: 8,
    min: 1,
    max: 64,
    help: "completions per prompt (G)",
    proto: "samplesPerPrompt",
  }),
  /**
   * 2.5e-4 for the 5.8M-parameter GPT-2 default: on the learning benchmark 1e-3 drove it to 11–15
   * nats of KL in 90 steps, and after its third pre-training stage 3e-4 (β 0.1) to 5.06, just over
   * the 5-nat target, where 2.5e-4 gave +1.23 std at 3.45 nats. The small byte-level policies learn
   * faster at 1e-3 (3e-4 barely moved them in 20 steps; the README's learning table gives their
   * settings).
   */
  learningRate: num({
    flag: "lr",
    default: 2.5e-4,
    above: 0,
    max: 1,
    help: "peak Adam learning rate α",
    proto: "learningRate",
  }),
  /**
   * 0.9: with per-token rewards a token is credited mostly for the next ~10 tokens' rewards;
   * it measured better than 1. With a scalar-only scorer prefer 1.
   */
  gamma: num({
    flag: "gamma",
    default: 0.9,
    min: 0,
    max: 1,
    help: "discount γ of the returns-to-go",
    proto: "gamma",
  }),
  /**
   * β is the sensitive knob. On the GPT-2 default (stage 2 of its pre-training) over 90 steps at
   * lr 3e-4: 0.045 reached 11 nats, 0.09 5.1, 0.1 3.5 (+1.15 std of reward), 0.15 1.9 (+0.77
   * std); on the shipped stage 3 at lr 3e-4, 0.1 reached 5.06 nats, 0.11 3.25 and 0.12 3.19
   * (+1.0 std). The byte-level policies were tuned at 0.045.
   */
  klCoef: num({
    flag: "kl-coef",
    default: 0.1,
    min: 0,
    max: 100,
    help: "β of the KL penalty to the reference",
    proto: "klCoef",
  }),
  entropyCoef: num({
    flag: "entropy-coef",
    default: 0,
    min: 0,
    max: 10,
    help: "entropy bonus c of L −= c·H",
    proto: "entropyCoef",
  }),
  maxGradNorm: num({
    flag: "max-grad-norm",
    default: 1,
    min: 0,
    max: 1e6,
    help: "global gradient-norm clip (0 = off)",
    proto: "maxGradNorm",
  }),
  baselineDecay: num({
    flag: "baseline-decay",
    default: 0.9,
    min: 0,
    below: 1,
    help: "decay d of the moving-average baseline",
    proto: "baselineDecay",
  }),
  /** RLOO: unbiased, and a group of G equal scores gives no gradient at all instead of noise. */
  baseline: choice(BASELINE_KINDS, {
    flag: "baseline",
    default: "rloo",
    help: "advantage baseline b of A = R − b",
    proto: "baseline",
    protoEnum: BaselineSchema,
  }),
  klIn: choice(["reward", "loss"] as const, {
    flag: "kl-in",
    default: "reward",
    help: "KL penalty in the per-token reward or in the loss",
    proto: "klIn",
    protoEnum: KlInSchema,
  }),
  klEstimator: choice(["k1", "k3"] as const, {
    flag: "kl-estimator",
    default: "k1",
    help: "sampled-token KL estimator",
    proto: "klEstimator",
    protoEnum: KlEstimatorSchema,
  }),
  klTarget: num({
    flag: "kl-target",
    default: 0,
    min: 0,
    max: 1000,
    unit: "nats/sample",
    help: "adaptive-β target KL (0 = fixed β)",
    proto: "klTarget",
  }),
  /** Ziegler et al. 2019 use 10 000. */
  klHorizon: num({
    flag: "kl-horizon",
    default: 10_000,
    min: 1,
    max: 1e9,
    unit: "samples",
    help: "adaptive-β horizon",
    proto: "klHorizon",
  }),
  weightDecay: num({
    flag: "weight-decay",
    default: 0,
    min: 0,
    max: 10,
    help: "AdamW decoupled weight decay λ",
    proto: "weightDecay",
  }),
  /** Adam's first updates are ±α on every weight; at full α they cost ~1.3 nats of KL before anything is learned. */
  warmupSteps: int({
    flag: "warmup-steps",
    default: 10,
    min: 0,
    max: 100_000,
    unit: "steps",
    help: "linear learning-rate warm-up",
    proto: "warmupSteps",
  }),
  /** Cosine: smaller late steps drift less, so less KL is spent on noise. */
  lrDecay: choice(["none", "cosine"] as const, {
    flag: "lr-decay",
    default: "cosine",
    help: "learning-rate decay after warm-up (cosine: to 0.1·lr at the last step)",
    proto: "lrDecay",
    protoEnum: LrDecaySchema,
  }),
  offPolicy: choice(["none", "ppo-clip", "truncated"] as const, {
    flag: "off-policy",
    default: "ppo-clip",
    help: "importance-ratio correction for samples of older weights",
    proto: "offPolicy",
    protoEnum: OffPolicySchema,
  }),
  clipEpsilon: num({
    flag: "clip-epsilon",
    default: 0.2,
    above: 0,
    below: 1,
    help: "ε of the PPO clip of ρ to [1 − ε, 1 + ε]",
    proto: "clipEpsilon",
  }),
  truncation: num({
    flag: "truncation",
    default: 1,
    min: 1,
    max: 1e6,
    help: "c of truncated importance sampling min(ρ, c)",
    proto: "truncation",
  }),
  /**
   * 1 (the default) lets the Policy sample step k + 1 while the Optimizer updates on step k, so
   * both cores work; each step's samples come from one version, one behind, so the run is still
   * the same run for the same seed. Use it with off-policy ppo-clip (the default) or truncated.
   * 0 keeps the synchronous loop (every sample from the weights in force). More than 1 only adds
   * importance-ratio variance and timing-dependent sampling: the overlap is complete at 1.
   */
  maxStaleness: int({
    flag: "max-staleness",
    default: 1,
    min: 0,
    max: 4,
    unit: "versions",
    help: "most weights versions a sample may lag (0 = synchronous; > 0 overlaps sampling and learning)",
    proto: "maxStaleness",
  }),
  publishEvery: int({
    flag: "publish-every",
    default: 1,
    min: 1,
    max: 10_000,
    unit: "steps",
    help: "publish new weights every n steps",
    proto: "publishEvery",
  }),
  seed: int({
    flag: "seed",
    default: 1,
    min: 0,
    max: 2 ** 32 - 1,
    help: "seed of prompt order and sampler seeds",
    proto: "seed",
  }),
  maxNewTokens: int({
    flag: "max-new-tokens",
    default: 24,
    min: 1,
    max: 4096,
    unit: "tokens",
    help: "new tokens per completion",
    proto: "sampling.maxNewTokens",
  }),
  /** 1 = the policy's own distribution, as REINFORCE assumes. */
  temperature: num({
    flag: "temperature",
    default: 1,
    min: 0,
    max: 10,
    help: "sampling temperature (0 = greedy)",
    proto: "sampling.temperature",
  }),
  topK: int({
    flag: "top-k",
    default: 0,
    min: 0,
    max: 100_000,
    help: "top-k filter (0 = off)",
    proto: "sampling.topK",
  }),
  topP: num({
    flag: "top-p",
    default: 1,
    above: 0,
    max: 1,
    help: "top-p filter (1 = off)",
    proto: "sampling.topP",
  }),
  prompts: texts({
    flag: "prompt",
    default: [],
    maxItems: 65_536,
    maxItemBytes: 4096,
    help: "training prompt, repeatable (default: held-out corpus prompts)",
    proto: "prompts",
  }),
  /**
   * LoRA (model/lora.ts). 0 = full fine-tuning, as before; r > 0 trains r·(in + out) values per
   * target layer instead of in·out, so published versions and Adam's moments shrink accordingly.
   */
  loraRank: int({
    flag: "lora-rank",
    default: 0,
    min: 0,
    max: 1024,
    help: "LoRA rank r: train low-rank adapters on a frozen base (0 = full fine-tuning)",
    proto: "lora.rank",
  }),
  /** 16: PEFT's examples pair r 8 with alpha 16 (scaling 2). */
  loraAlpha: num({
    flag: "lora-alpha",
    default: 16,
    above: 0,
    max: 10_000,
    help: "LoRA scale numerator alpha (the adapters' output is scaled by alpha / rank)",
    proto: "lora.alpha",
  }),
  loraDropout: num({
    flag: "lora-dropout",
    default: 0,
    min: 0,
    below: 1,
    help: "dropout probability on the LoRA adapters' input, training passes only",
    proto: "lora.dropout",
  }),
  loraTargets: texts({
    flag: "lora-target",
    default: [],
    maxItems: 64,
    maxItemBytes: 128,
    help: "LoRA target layer by name suffix, repeatable, e.g. c_attn, q_proj (default: every block linear)",
    proto: "lora.targets",
  }),
  /** 10 bounds the work a crash can lose to 10 steps, for a write that costs milliseconds. */
  checkpointEvery: int({
    flag: "checkpoint-every",
    default: 10,
    min: 0,
    max: 100_000,
    unit: "steps",
    help: "resumable checkpoint every n steps (0 = only the last step)",
    proto: "checkpointEvery",
  }),
  /** 2, so a checkpoint that turned out bad still leaves an older one (~4× the weights' size each). */
  checkpointKeep: int({
    flag: "checkpoint-keep",
    default: 2,
    min: 0,
    max: 10_000,
    help: "newest step checkpoints kept (0 = all)",
    proto: "checkpointKeep",
  }),
  // --- fbmix ---
  /**
   * Reward normalisation in the Optimizer (core/src/learn/reward-norm.ts): off by default, so a
   * run's rewards reach the learner as the scorer gave them, bitwise as before.
   */
  rewardNorm: choice(["off", "per-scorer"] as const, {
    flag: "reward-norm",
    default: "off",
    help: "reward normalisation before each update: off, or per-scorer (r − μ)/(σ + 1e-8) with a running mean/std per scorer_id",
    proto: "rewardNorm",
    protoEnum: RewardNormSchema,
  }),
  /** 0 = off: a clip is a choice of scale, meaningful only once that scale is known (e.g. normalised). */
  rewardClip: num({
    flag: "reward-clip",
    default: 0,
    min: 0,
    max: 1e6,
    help: "clip each sample's (normalised) reward to ±c before the update (0 = off)",
    proto: "rewardClip",
  }),
  // --- end of fbmix ---
  // --- fbres ---
  /**
   * 0.5: a step that loses more than half its samples to a broken scorer learns from a biased
   * rest; failing the run says so, where training on would hide it. 1 never fails on the share
   * (a step with no sample left still fails).
   */
  maxExcludedShare: num({
    flag: "max-excluded-share",
    default: 0.5,
    min: 0,
    max: 1,
    help: "the run fails when more than this share of one step's samples is excluded (scorer errors, abstentions, dead letters)",
    proto: "maxExcludedShare",
  }),
  // --- end of fbres ---
};

/** Where the services are and what they load (`services.*`; CLI and config file only). */
const SERVICES = {
  natsUrl: text({
    flag: "nats",
    default: "",
    pattern: /^$|^(nats|tls):\/\/[^\s]+$/,
    patternHelp: "nats://host:port",
    help: "NATS server URL (empty = the embedded in-memory bus)",
  }),
  feedbackAddress: text({
    flag: "feedback-address",
    default: "",
    pattern: HOST_PORT,
    patternHelp: "host:port",
    help: "external FeedbackService address (empty = the built-in rule scorer)",
  }),
  policyAddress: text({
    flag: "policy-address",
    default: "",
    pattern: HOST_PORT,
    patternHelp: "host:port",
    help: "PolicyService address, for a Rollout served on its own",
  }),
  checkpoint: text({
    flag: "checkpoint",
    default: DEFAULT_CHECKPOINT,
    isPath: true,
    help: "checkpoint file or Hugging Face model directory to serve / start from",
  }),
  /**
   * A Hugging Face model directory instead of a checkpoint: one setting, so every command that
   * serves or trains a model takes the same flag and config key.
   */
  model: text({
    flag: "model",
    default: "",
    isPath: true,
    help: "Hugging Face model directory to serve / train instead of --checkpoint (config.json, model.safetensors or its index, tokenizer.json)",
  }),
  backend: choice(["auto", "tensorflow", "wasm", "cpu"] as const, {
    flag: "backend",
    default: "auto",
    help: "compute backend (auto: native → wasm with OpenBLAS → wasm → cpu)",
  }),
  /**
   * "thread": the embedded run's Policy samples in a worker thread of its own while the main
   * thread learns, so a second core works (tfjs-wasm and JS are single-threaded). "main" keeps
   * everything on one thread, as before; the run's samples and weights are the same either way.
   */
  policyIn: choice(["thread", "main"] as const, {
    flag: "policy-in",
    default: "thread",
    help: "where an embedded run's Policy computes: its own worker thread, or the main thread",
  }),
  /**
   * "thread": the Optimizer's updates compute in a worker thread of its own, so the main thread
   * keeps the services, the bus and the gRPC API going during an update, and with maxStaleness > 0
   * the next step is sampled meanwhile. "main" updates on the main thread; the weights are the
   * same either way.
   */
  learnerIn: choice(["thread", "main"] as const, {
    flag: "learner-in",
    default: "thread",
    help: "where the Optimizer's updates compute: its own worker thread, or the main thread",
  }),
  /**
   * 256: four steps' worth of the default run's 64 rows, ~64 MB of KV cache for the default
   * Transformer; past a few dozen rows a decoding step costs little more per row added.
   */
  policyBatchRows: int({
    flag: "policy-batch-rows",
    default: 256,
    min: 1,
    max: 16_384,
    unit: "rows",
    help: "most rows a Policy replica decodes together (more wait for a free slot)",
  }),
  /** 1024: a few batches of waiting work; past it callers are told to back off (RESOURCE_EXHAUSTED). */
  policyQueueRows: int({
    flag: "policy-queue-rows",
    default: 1024,
    min: 0,
    max: 1_000_000,
    unit: "rows",
    help: "most rows a Policy replica queues beyond one batch before refusing calls (RESOURCE_EXHAUSTED)",
  }),
  /** 8: a default step's 8 prompt jobs at once, so the Policy decodes them as one 64-row batch. */
  rolloutConcurrency: int({
    flag: "rollout-concurrency",
    default: 8,
    min: 1,
    max: 256,
    unit: "jobs",
    help: "prompt jobs a Rollout worker keeps in flight",
  }),
  rpcTimeoutMs: int({
    flag: "rpc-timeout-ms",
    default: 60_000,
    min: 1,
    max: 3_600_000,
    unit: "ms",
    help: "deadline of each call to Policy or Feedback",
  }),
  // --- Rollout retries and dead letters (resilience: ride out a peer's restart, never drop a job) ---
  /**
   * 30 s: long enough for a Policy or Feedback process to be restarted (a few seconds) and load
   * its model; the job is then given back for redelivery, so another replica may take it.
   */
  rolloutRetryMs: int({
    flag: "rollout-retry-ms",
    default: 30_000,
    min: 0,
    max: 3_600_000,
    unit: "ms",
    help: "how long a Rollout worker retries a job's failing Policy/Feedback calls before giving it back",
  }),
  /** 5: five deliveries of up to rollout-retry-ms each before the job's samples count as failed. */
  rolloutMaxDeliver: int({
    flag: "rollout-max-deliver",
    default: 5,
    min: 1,
    max: 1_000,
    unit: "deliveries",
    help: "deliveries of a prompt job before it goes to the dead-letter queue and its samples are failed",
  }),
  // --- end of Rollout retries and dead letters ---
  // --- scale ---
  /**
   * 15 s: the built-in scorer answers in milliseconds and an LLM judge on a few completions in
   * seconds, while a Policy call may take the whole rpc-timeout-ms. A Score call that misses it
   * is retried (scorer-attempts in all, rollout/scorer-guard.ts) and then its samples are ERROR,
   * so a hung scorer costs a step at most scorer-attempts such deadlines (45 s), not minutes.
   */
  feedbackTimeoutMs: int({
    flag: "feedback-timeout-ms",
    default: 15_000,
    min: 1,
    max: 3_600_000,
    unit: "ms",
    help: "deadline of each Rollout call to the Feedback service; past it the call is retried (--scorer-attempts), then its samples are ERROR",
  }),
  // --- end of scale ---
  stepTimeoutMs: int({
    flag: "step-timeout-ms",
    default: 300_000,
    min: 1,
    max: 86_400_000,
    unit: "ms",
    help: "longest wait for one step's trajectories",
  }),
  // --- Signed, versioned weights (core/src/weights/: weights-signing.ts, weights-publisher.ts) ---
  /**
   * Empty by default: `rlaif serve optimizer` then publishes unsigned manifests, while `rlaif
   * train` and `rlaif up` generate a key pair per run, so a run they start is signed anyway.
   */
  weightsSigningKey: text({
    flag: "weights-signing-key",
    default: "",
    isPath: true,
    help: "Optimizer: PEM Ed25519 private key that signs every weights manifest (empty: unsigned; train and up generate one per run)",
  }),
  /** Empty by default, as the signing key; with one, a replica takes only weights that key signed. */
  weightsVerifyKey: text({
    flag: "weights-verify-key",
    default: "",
    isPath: true,
    help: "Policy: PEM Ed25519 public key of the Optimizer; weights it did not sign are refused (empty: unsigned weights are taken)",
  }),
  /**
   * 3: the served version, the one before (a replica still fetching it) and one more; the run's
   * reference weights are kept besides, whatever their age.
   */
  weightsRetention: int({
    flag: "weights-retention",
    default: 3,
    min: 1,
    max: 1_000_000,
    unit: "versions",
    help: "Optimizer: weights versions kept in the Object Store after each publish (the run's reference is always kept)",
  }),
  // --- end of signed weights ---
  // --- delta ---
  /**
   * 10: a chain is a full version and up to 9 deltas, so a replica that missed versions reads at
   * most 10 blobs to catch up, and retention keeps at most that many besides its newest. 1 turns
   * deltas off (every version full).
   */
  weightsFullEvery: int({
    flag: "weights-full-every",
    default: 10,
    min: 1,
    max: 1000,
    unit: "versions",
    help: "Optimizer: every how many versions the weights are published in full; in between, a version stores only the tensors that changed from its parent (1: always full)",
  }),
  // --- Security: gRPC TLS/mTLS, control-RPC tokens, NATS credentials (grpc/credentials.ts,
  // grpc/control-token.ts, bus/nats-auth.ts). Every default is "off": plaintext on loopback. ---
  /** PEM files, as Kubernetes mounts them from Secrets; one pair serves both server and client roles. */
  tlsCert: text({
    flag: "tls-cert",
    default: "",
    isPath: true,
    help: "PEM certificate chain the gRPC servers present (and clients show under mTLS); with --tls-key turns TLS on",
  }),
  tlsKey: text({
    flag: "tls-key",
    default: "",
    isPath: true,
    help: "PEM private key of --tls-cert",
  }),
  tlsCa: text({
    flag: "tls-ca",
    default: "",
    isPath: true,
    help: "PEM CA bundle peers' certificates must chain to (clients dial TLS once it is set)",
  }),
  /** "require" is mTLS: only holders of a certificate from --tls-ca can call at all. */
  tlsClientAuth: choice(["none", "require"] as const, {
    flag: "tls-client-auth",
    default: "none",
    help: "whether gRPC servers require a client certificate from --tls-ca (require = mTLS)",
  }),
  /** Prefer the file or RLAIF_CONTROL_TOKEN: a flag's value shows in `ps`. */
  controlToken: text({
    flag: "control-token",
    default: "",
    help: "bearer token the Optimizer's control RPCs require and the CLI sends (or RLAIF_CONTROL_TOKEN)",
  }),
  controlTokenFile: text({
    flag: "control-token-file",
    default: "",
    isPath: true,
    help: "file whose first line is the control token",
  }),
  natsUser: text({
    flag: "nats-user",
    default: "",
    help: "NATS user name of this service (or RLAIF_NATS_USER)",
  }),
  /** Prefer RLAIF_NATS_PASSWORD: a flag's value shows in `ps`. */
  natsPassword: text({
    flag: "nats-password",
    default: "",
    help: "NATS password of --nats-user (or RLAIF_NATS_PASSWORD)",
  }),
  natsCreds: text({
    flag: "nats-creds",
    default: "",
    isPath: true,
    help: "NATS credentials file (JWT + nkey seed) instead of a user and password",
  }),
  // --- end of security settings ---
  // --- openai ---
  // The Policy's OpenAI-compatible HTTP API (policy/openai-http.ts). Off unless a port is given,
  // on the same host as the gRPC server (127.0.0.1 unless --host says otherwise).
  /** 0 = off: an HTTP port a deployment did not ask for is one more thing to secure. */
  openaiPort: int({
    flag: "openai-port",
    default: 0,
    min: 0,
    max: 65_535,
    help: "Policy: port of the OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions) on --host (0 = off)",
  }),
  /** Prefer the file or RLAIF_OPENAI_TOKEN: a flag's value shows in `ps`. */
  openaiToken: text({
    flag: "openai-token",
    default: "",
    help: "bearer token the OpenAI HTTP API requires (or RLAIF_OPENAI_TOKEN; none = open to anyone who can reach the port)",
  }),
  openaiTokenFile: text({
    flag: "openai-token-file",
    default: "",
    isPath: true,
    help: "file whose first line is the OpenAI HTTP API's bearer token",
  }),
  /** A fixed id, not the checkpoint's path: clients put it in every request, and weights change under it. */
  openaiModel: text({
    flag: "openai-model",
    default: "rlaif-policy",
    pattern: /^[A-Za-z0-9._:/-]{1,128}$/,
    patternHelp: "1-128 letters, digits or . _ : / -",
    help: "model id the OpenAI HTTP API lists and accepts (requests naming another get 404)",
  }),
  // --- end of openai ---
  // --- contract ---
  /**
   * The built-in Feedback as weighted rules (services/feedback/composite-scorer.ts): "" is the
   * AFINN scorer alone, as always; a mix such as `afinn:1,length(5-30):0.3` adds format and
   * keyword rules to it without writing a service. Ignored where an external scorer is used.
   */
  feedbackRules: text({
    flag: "feedback-rules",
    default: "",
    help: "built-in feedback as weighted rules rule:weight,… of afinn, length(MIN-MAX), repetition, keyword(a|b), regex(RE) (empty = afinn:1)",
  }),
  // --- end of contract ---
  // --- metrics ---
  /**
   * The ops HTTP port of `rlaif serve` (core/src/ops/ops-http.ts: /metrics for Prometheus,
   * /healthz). 0 = off, as `--openai-port`: a port opened by default would collide when several
   * services share a host (tests, `rlaif up`, which gives each process a free one). A pod passes a
   * fixed port (k8s/base: 9464, the OpenTelemetry Prometheus exporter's registered default), the
   * same in every pod since each has its own network namespace. See docs/metrics.md.
   */
  metricsPort: int({
    flag: "metrics-port",
    default: 0,
    min: 0,
    max: 65_535,
    help: "port of the ops HTTP server (/metrics for Prometheus, /healthz; rlaif train also /report) on --host, 127.0.0.1 for rlaif train (0 = off)",
  }),
  // --- end of metrics ---
  // --- judgecheck ---
  // The LLM judge as the built-in Feedback's scorer (services/feedback/judge-scorer.ts); off
  // while judgeUrl is empty, and then the rule scorers serve as before.
  /** Base URL including /v1 of any OpenAI-compatible API (another rlaif Policy's --openai-port works). */
  judgeUrl: text({
    flag: "judge-url",
    default: "",
    help: "Feedback: judge items with an LLM at this OpenAI-compatible base URL incl. /v1 (empty = rule scorers)",
  }),
  judgeModel: text({
    flag: "judge-model",
    default: "",
    help: "Feedback: model id the judge API is asked for (required with --judge-url)",
  }),
  judgeMode: choice(["completions", "chat"] as const, {
    flag: "judge-mode",
    default: "completions",
    help: "Feedback: judge endpoint, /v1/completions or /v1/chat/completions",
  }),
  judgeRubricFile: text({
    flag: "judge-rubric-file",
    default: "",
    isPath: true,
    help: "Feedback: rubric file with {prompt} and {completion}, asking for 'Score: N' in 0-10 (empty = built-in rubric)",
  }),
  /** A key in a flag would show in `ps`: only where to find it is configured. */
  judgeApiKeyEnv: text({
    flag: "judge-api-key-env",
    default: "",
    help: "Feedback: environment variable holding the judge API's bearer key",
  }),
  judgeApiKeyFile: text({
    flag: "judge-api-key-file",
    default: "",
    isPath: true,
    help: "Feedback: file whose first line is the judge API's bearer key",
  }),
  judgeTimeoutMs: int({
    flag: "judge-timeout-ms",
    default: 30_000,
    min: 1,
    max: 600_000,
    help: "Feedback: deadline of each judge request in ms (a late answer is an ERROR item)",
  }),
  /** 0 by default: GetInfo can then say deterministic, and a retried item gets the same score. */
  judgeTemperature: num({
    flag: "judge-temperature",
    default: 0,
    min: 0,
    max: 2,
    help: "Feedback: sampling temperature of the judge (0 = deterministic)",
  }),
  // --- end of judgecheck ---
  // --- rm ---
  /**
   * A reward model (services/core/src/model/reward-model.ts, made by `rlaif train-rm`) as the
   * built-in Feedback: `serve feedback` serves it and `train` scores with it alone, so an RLAIF
   * run's only feedback is a model learned from AI labels. "" keeps the rule scorers.
   */
  rewardModel: text({
    flag: "reward-model",
    default: "",
    isPath: true,
    help: "reward-model directory (rlaif train-rm --out) to serve as the built-in feedback instead of the rules",
  }),
  // --- end of rm ---
  // --- otel ---
  /**
   * How the services write their log lines (telemetry/log-format.ts): `text` is the plain line as
   * always; `json` is one object per line (time, level, service, msg) for a log shipper (Loki,
   * Elasticsearch, CloudWatch). Text by default, also when stderr is not a terminal: a pod's
   * collector decides what it parses, and an unexpected format change breaks existing greps.
   */
  logFormat: choice(["text", "json"] as const, {
    flag: "log-format",
    default: "text",
    help: "log line format of the services: text (plain lines) or json (one object per line: time, level, service, run_id, trace_id/span_id inside a traced span, msg)",
  }),
  /**
   * Tracing is off unless an OTLP/HTTP endpoint is named (here or by the standard
   * OTEL_EXPORTER_OTLP_ENDPOINT): off costs nothing, and nothing is sent anywhere by surprise.
   */
  otlpEndpoint: text({
    flag: "otlp-endpoint",
    default: "",
    pattern: /^(https?:\/\/[^\s]+)?$/,
    patternHelp: "an http:// or https:// URL",
    help: "OTLP/HTTP base URL the services send trace spans to, e.g. http://127.0.0.1:4318 (/v1/traces is added; empty = OTEL_EXPORTER_OTLP_ENDPOINT, else tracing off)",
  }),
  otlpHeaders: text({
    flag: "otlp-headers",
    default: "",
    pattern: /^([^=,\s]+=[^,]*(,[^=,\s]+=[^,]*)*)?$/,
    patternHelp: "k=v pairs separated by commas",
    help: "headers of every OTLP export as k=v,… e.g. an API key (empty = OTEL_EXPORTER_OTLP_HEADERS)",
  }),
  // --- end of otel ---
  // --- fbmix ---
  /**
   * Weights of the model scorers when the built-in Feedback mixes scorers
   * (services/feedback/mixed-scorer.ts): reward = w_judge·judge + w_rm·rm + rules. 1 by default,
   * so a scorer named alone is served as itself; 0 is refused (leave the scorer out instead).
   */
  judgeWeight: num({
    flag: "judge-weight",
    default: 1,
    min: -1e6,
    max: 1e6,
    help: "Feedback: weight of the LLM judge's score in the reward when it is mixed with other scorers (non-zero)",
  }),
  rewardModelWeight: num({
    flag: "reward-model-weight",
    default: 1,
    min: -1e6,
    max: 1e6,
    help: "Feedback: weight of the reward model's score in the reward when it is mixed with other scorers (non-zero)",
  }),
  // --- end of fbmix ---
  // --- fbres ---
  /**
   * 3: a scorer that misses its deadline twice in a row is likely hung, and each attempt costs a
   * whole feedback-timeout-ms, so more attempts only lengthen the worst-case step.
   */
  scorerAttempts: int({
    flag: "scorer-attempts",
    default: 3,
    min: 1,
    max: 20,
    unit: "attempts",
    help: "attempts of a Score call that times out before its samples are failed (excluded, counted)",
  }),
  /** 200 ms: doubled per retry up to 2 s and drawn with full jitter, so retries of many jobs spread out. */
  scorerBackoffMs: int({
    flag: "scorer-backoff-ms",
    default: 200,
    min: 0,
    max: 60_000,
    unit: "ms",
    help: "first backoff between Score retries (doubling up to 2 s, full jitter)",
  }),
  /** 5: a few failures in a row rule out a blip, yet stop a broken scorer within one step's jobs. */
  scorerBreakerFailures: int({
    flag: "scorer-breaker-failures",
    default: 5,
    min: 1,
    max: 10_000,
    unit: "failures",
    help: "consecutive failed Score calls that open a scorer's circuit (its samples then fail without a call)",
  }),
  /** 10 s: long enough to spare a struggling scorer, short enough that a recovered one is back within a step. */
  scorerBreakerCoolDownMs: int({
    flag: "scorer-breaker-cool-down-ms",
    default: 10_000,
    min: 1,
    max: 3_600_000,
    unit: "ms",
    help: "how long an open scorer circuit waits before one probe call",
  }),
  // --- end of fbres ---
};

const OUT = text({
  flag: "out",
  default: "runs",
  isPath: true,
  help: "directory for the runs' checkpoints and metrics",
});

type Values<T> = { -readonly [K in keyof T]: T[K] extends Setting<infer V> ? V : never };

/** Hyperparameters of one training run (mirrors rlaif.common.v1.RunConfig). */
export type RunSettings = Values<typeof RUN>;
/** Where the services are and what they load. */
export type ServiceSettings = Values<typeof SERVICES>;
/** The whole configuration: a file (YAML or JSON) overridden by flags. */
export interface RlaifConfig {
  run: RunSettings;
  services: ServiceSettings;
  /** Directory for the run's checkpoints and metrics. */
  out: string;
}

function keyed<T extends Record<string, Setting>>(prefix: string, group: T): Setting[] {
  return Object.entries(group).map(([k, s]) => ({ ...s, path: `${prefix}${k}` }));
}

/** Every setting, in declaration order; services and commands pick the ones they use. */
export const SETTINGS: readonly Setting[] = [
  ...keyed("run.", RUN),
  ...keyed("services.", SERVICES),
  { ...OUT, path: "out" },
];

/** The settings of a run that a RunConfig carries, keyed by RunSettings field. */
export const RUN_SETTINGS: ReadonlyArray<
  Setting & { readonly proto: string; readonly key: keyof RunSettings }
> = SETTINGS.flatMap((s) =>
  s.path.startsWith("run.") && s.proto
    ? [{ ...s, proto: s.proto, key: s.path.slice(4) as keyof RunSettings }]
    : [],
);

/** Flags of every run setting, in declaration order (the run commands take them all). */
export const RUN_FLAGS: readonly string[] = SETTINGS.filter((s) => s.path.startsWith("run.")).map(
  (s) => s.flag,
);

/** Look a setting up by its flag name. */
export function settingByFlag(flag: string): Setting | undefined {
  return SETTINGS.find((s) => s.flag === flag);
}

/** Defaults; see each setting's declaration for why it has its value. */
export function defaultConfig(): RlaifConfig {
  const config: Record<string, unknown> = {};
  for (const s of SETTINGS) setPath(config, s.path, Array.isArray(s.default) ? [...s.default] : s.default);
  return config as unknown as RlaifConfig;
}

/** A number in a reason: as written, so `0.1` reads `0.1` and a uint64 prints every digit. */
function show(v: number | bigint): string {
  return String(v);
}

/** The range of a number setting as text, e.g. `[0, 100]`, `(0, 1]`, or "" when unbounded. */
export function rangeText(s: Setting): string {
  const lo = s.above ?? s.min;
  const hi = s.below ?? s.max;
  if (lo === undefined && hi === undefined) return "";
  return `${s.above !== undefined ? "(" : "["}${lo ?? "−∞"}, ${hi ?? "∞"}${s.below !== undefined ? ")" : "]"}`;
}

/** Why a value is refused: `at` is appended to the setting's name ("" or "[3]"), then the reason. */
export interface SettingProblem {
  readonly at: string;
  readonly reason: string;
}

/**
 * Why `value` is not a valid value of `s`, or undefined when it is. The one check behind flags,
 * config files and RunConfig fields, so all three refuse a value with the same words.
 * `value` is already of the setting's type (a number, a string or a list of strings); a uint64
 * RunConfig field may pass a bigint.
 */
export function settingProblem(s: Setting, value: unknown): SettingProblem | undefined {
  const bad = (reason: string, at = ""): SettingProblem => ({ at, reason });
  if (s.type === "int" || s.type === "number") {
    if (typeof value !== "number" && typeof value !== "bigint")
      return bad(`expected a number, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (!Number.isFinite(n)) return bad(`must be a finite number, got ${show(value)}`);
    if (s.type === "int" && !Number.isInteger(n)) return bad(`expected a whole number, got ${show(value)}`);
    const low = (s.min === undefined || n >= s.min) && (s.above === undefined || n > s.above);
    const high = (s.max === undefined || n <= s.max) && (s.below === undefined || n < s.below);
    if (low && high) return undefined;
    const lo = s.min ?? s.above;
    const hi = s.max ?? s.below;
    // Two bounds read as an interval ("between 0 and 10", "in (0, 1]"), one as a limit.
    if (lo !== undefined && hi !== undefined) {
      const interval =
        s.above === undefined && s.below === undefined ? `between ${lo} and ${hi}` : `in ${rangeText(s)}`;
      return bad(`must be ${interval}, got ${show(value)}`);
    }
    if (!low) return bad(`must be ${s.min !== undefined ? "at least" : "above"} ${lo}, got ${show(value)}`);
    return bad(`must be ${s.max !== undefined ? "at most" : "below"} ${hi}, got ${show(value)}`);
  }
  if (s.type === "strings") {
    if (!Array.isArray(value)) return bad(`expected a list of text, got ${JSON.stringify(value)}`);
    if (s.maxItems !== undefined && value.length > s.maxItems) {
      return bad(`must have at most ${s.maxItems} items, got ${value.length}`);
    }
    for (const [i, item] of value.entries()) {
      if (typeof item !== "string") return bad(`expected text, got ${JSON.stringify(item)}`, `[${i}]`);
      if (item === "") return bad("must not be empty", `[${i}]`);
      const bytes = Buffer.byteLength(item);
      if (s.maxItemBytes !== undefined && bytes > s.maxItemBytes) {
        return bad(`must be at most ${s.maxItemBytes} bytes of UTF-8, got ${bytes}`, `[${i}]`);
      }
    }
    return undefined;
  }
  if (typeof value !== "string") return bad(`expected text, got ${JSON.stringify(value)}`);
  if (s.oneOf && !s.oneOf.includes(value)) return bad(`must be one of ${s.oneOf.join(", ")}, got "${value}"`);
  if (s.pattern && !s.pattern.test(value)) return bad(`must look like ${s.patternHelp}, got "${value}"`);
  return undefined;
}
