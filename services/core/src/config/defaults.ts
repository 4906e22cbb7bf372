/**
 * The default configuration of a run, in one place.
 *
 * Every hyperparameter is documented where it is declared. The defaults are sized for the
 * embedded quick start: a real RLAIF run of the committed pretrained checkpoint on 2 CPU cores
 * in a few minutes.
 */
import { fileURLToPath } from "node:url";

/** Baselines of the advantages (see learn/advantages.ts). */
export const BASELINE_KINDS = ["none", "moving-average", "rloo", "group", "batch"] as const;
/** One of {@link BASELINE_KINDS}. */
export type BaselineKind = (typeof BASELINE_KINDS)[number];

/** Repository root, so defaults resolve no matter which directory the CLI runs from. */
export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/** The pretrained checkpoint committed with the project (produced by `rlaif pretrain`). */
export const DEFAULT_CHECKPOINT = `${REPO_ROOT}checkpoints/default/model.safetensors`;

/** Hyperparameters of one training run (mirrors rlaif.common.v1.RunConfig). */
export interface RunSettings {
  /** Optimizer steps. Each step samples promptsPerStep × samplesPerPrompt completions. */
  steps: number;
  /** Prompts per step. */
  promptsPerStep: number;
  /** Completions per prompt (G): 8 gives the RLOO baseline 7 other samples of the same prompt. */
  samplesPerPrompt: number;
  /**
   * Adam learning rate α in θ ← θ + α∇J. 1e-3 with the warm-up below moves the small default
   * policies within tens of steps (bench/learning.ts; 3e-4 barely moved them in 20).
   */
  learningRate: number;
  /**
   * Discount γ of the returns-to-go R_t = Σ_{k≥t} γ^{k−t} r_k. 0.9: with per-token rewards (the
   * built-in scorer credits each word where it was written) a token is credited mostly for the
   * next ~10 tokens' rewards, not for everything after it; it measured better than 1 on the
   * learning benchmark. With a scorer that returns only a scalar (credited to the last token),
   * prefer 1, so early tokens are not discounted.
   */
  gamma: number;
  /**
   * β of the KL penalty to the frozen reference policy. The learning benchmark is sensitive to
   * it: at 90 steps, 0.05 held the policy to ~3.4–4.6 nats and ~1 std of reward gain, 0.04 let it
   * reach 5.9 nats; 0.045 sits between.
   */
  klCoef: number;
  /** Entropy bonus coefficient. */
  entropyCoef: number;
  /** Global gradient-norm clip threshold (0 = off). */
  maxGradNorm: number;
  /** Decay of the moving-average baseline b ← d·b + (1−d)·mean(R). */
  baselineDecay: number;
  /**
   * Baseline of the advantages (learn/advantages.ts): none, moving-average, rloo, group, batch.
   * RLOO: unbiased, and a group of G equal scores (most groups under a sparse reward) gives no
   * gradient at all instead of noise.
   */
  baseline: BaselineKind;
  /** Where the KL to the reference goes: in the per-token reward or in the loss. */
  klIn: "reward" | "loss";
  /** Sampled-token KL estimator (learn/kl.ts): k1 = log π_θ − log π_ref, k3 = (r − 1) − log r. */
  klEstimator: "k1" | "k3";
  /** Target KL (nats per sample) of the adaptive β controller; 0 = fixed β = klCoef. */
  klTarget: number;
  /** Horizon (samples) of the adaptive β controller (Ziegler et al. 2019 use 10 000). */
  klHorizon: number;
  /** AdamW decoupled weight decay λ (0 = plain Adam). */
  weightDecay: number;
  /**
   * Linear learning-rate warm-up steps (0 = none). 10: Adam's first updates are ±α on every
   * weight whatever the gradient's size; at full α they cost ~1.3 nats of KL before anything
   * is learned.
   */
  warmupSteps: number;
  /**
   * Learning-rate decay after warm-up: none (constant) or cosine (to 0.1·lr at the last step).
   * Cosine: smaller late steps drift less, so less KL is spent on noise.
   */
  lrDecay: "none" | "cosine";
  /** Off-policy correction for samples from older weights: none, ppo-clip or truncated. */
  offPolicy: "none" | "ppo-clip" | "truncated";
  /** ε of the PPO clip of ρ to [1 − ε, 1 + ε]. */
  clipEpsilon: number;
  /** c of truncated importance sampling min(ρ, c). */
  truncation: number;
  /** Publish new weights to the Policy replicas every this many steps. */
  publishEvery: number;
  /** Seed for prompt order and sampler seeds. */
  seed: number;
  /** New tokens per completion. */
  maxNewTokens: number;
  /** Sampling temperature (1 = the policy's own distribution, as REINFORCE assumes). */
  temperature: number;
  /** Top-k filter at sampling (0 = off). */
  topK: number;
  /** Top-p filter at sampling (1 = off). */
  topP: number;
  /** Training prompts; empty = held-out prompts from the bundled corpus. */
  prompts: string[];
  /**
   * Write a resumable checkpoint (`step-<n>.safetensors` in the run directory: weights, Adam
   * state, baseline/β, reference weights) every this many steps, and always after the last step;
   * 0 = only after the last step. 10 bounds the work a crash can lose to 10 steps, for a
   * write that costs milliseconds next to a step of seconds.
   */
  checkpointEvery: number;
  /**
   * Keep the newest this many `step-<n>.safetensors` of a run and delete older ones (0 = keep
   * all). 2, so a checkpoint that turned out bad still leaves an older one, at ~4× the weights'
   * size each (default model: 13 MB).
   */
  checkpointKeep: number;
}

/** Where the services are and what they load. */
export interface ServiceSettings {
  /** NATS server URL; empty = the embedded in-memory bus. */
  natsUrl: string;
  /** Address (host:port) of an external FeedbackService; empty = the built-in rule scorer. */
  feedbackAddress: string;
  /** Address of the Policy service, for a Rollout worker served on its own. */
  policyAddress: string;
  /** Checkpoint the Policy serves and the Optimizer starts from. */
  checkpoint: string;
  /** Compute backend: auto (native → wasm → cpu), tensorflow, wasm or cpu. */
  backend: "auto" | "tensorflow" | "wasm" | "cpu";
  /** Deadline of each call to Policy or Feedback, in milliseconds. */
  rpcTimeoutMs: number;
  /** How long the Optimizer waits for one step's trajectories before failing the run. */
  stepTimeoutMs: number;
}

/** The whole configuration: a file (YAML or JSON) overridden by flags. */
export interface RlaifConfig {
  run: RunSettings;
  services: ServiceSettings;
  /** Directory for the run's checkpoints and metrics. */
  out: string;
}

/** Defaults; see each field's documentation for why it has this value. */
export function defaultConfig(): RlaifConfig {
  return {
    run: {
      steps: 20,
      promptsPerStep: 8,
      samplesPerPrompt: 8,
      learningRate: 1e-3,
      gamma: 0.9,
      klCoef: 0.045,
      entropyCoef: 0,
      maxGradNorm: 1,
      baselineDecay: 0.9,
      baseline: "rloo",
      klIn: "reward",
      klEstimator: "k1",
      klTarget: 0,
      klHorizon: 10_000,
      weightDecay: 0,
      warmupSteps: 10,
      lrDecay: "cosine",
      offPolicy: "none",
      clipEpsilon: 0.2,
      truncation: 1,
      publishEvery: 1,
      seed: 1,
      maxNewTokens: 24,
      temperature: 1,
      topK: 0,
      topP: 1,
      prompts: [],
      checkpointEvery: 10,
      checkpointKeep: 2,
    },
    services: {
      natsUrl: "",
      feedbackAddress: "",
      policyAddress: "",
      checkpoint: DEFAULT_CHECKPOINT,
      backend: "auto",
      rpcTimeoutMs: 60_000,
      stepTimeoutMs: 300_000,
    },
    out: "runs",
  };
}
