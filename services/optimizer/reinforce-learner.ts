/**
 * The Optimizer's learner: the trainable policy, Adam(W), the baseline and β, applying REINFORCE
 * as the seed states it, with the fixes a real system needs (docs/architecture.md#seed-fixes, #learning):
 *
 *   J(θ) = E_πθ[Σ_t γ^t r_t]
 *   ∇J ≈ Σ_t ∇log π_θ(y_t | x, y_<t) · A_t,   A_t = R_t − b,   R_t = Σ_{k≥t} γ^{k−t} r_k
 *
 * with sampled actions (the Policy samples) and only the chosen tokens' log-probs. Selectable by
 * config (RunSettings): the baseline b (learn/advantages.ts), the KL to the frozen reference in the
 * reward (r_t ← r_t − β·KL_t, default, k1) or in the loss (L += β·KL, prefer k3: learn/kl.ts), a
 * fixed or adaptive β (learn/kl-controller.ts), the entropy bonus, AdamW weight decay, warm-up and
 * cosine decay (learn/schedule.ts), and an importance-ratio correction for samples of older weights
 * (learn/off-policy.ts).
 */
import type * as tf from "@tensorflow/tfjs";
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { CheckpointError } from "../core/src/errors.js";
import { sha256Hex } from "../core/src/hash.js";
import { Adam, adamStateFromTensors, adamStateToTensors } from "../core/src/learn/adam.js";
import { computeAdvantages } from "../core/src/learn/advantages.js";
import { type BaselineState, MovingAverageBaseline } from "../core/src/learn/baseline.js";
import { klPenalizedRewards } from "../core/src/learn/kl.js";
import { KlController, type KlControllerState } from "../core/src/learn/kl-controller.js";
import { trainStep } from "../core/src/learn/optimizer.js";
import { buildPgBatch, disposePgBatch } from "../core/src/learn/reinforce.js";
import { tokenRewards } from "../core/src/learn/returns.js";
import { adjustTokenRewards, RewardNormalizer, type RewardNormState } from "../core/src/learn/reward-norm.js";
import { runLearningRate } from "../core/src/learn/schedule.js";
import type { CausalLM, WeightMap } from "../core/src/model/causal-lm.js";
import {
  type CheckpointTokenizer,
  checkpointFromModel,
  type DecodedCheckpoint,
  encodeCheckpoint,
  loadCheckpoint,
  modelFromCheckpoint,
  modelIdentity,
  saveCheckpoint,
} from "../core/src/model/checkpoint.js";
import {
  ADAM_TENSOR_PREFIX,
  LEARNER_STATE_KEY,
  LORA_TENSOR_PREFIX,
  OPTIMIZER_STATE_KEY,
  prefixTensors,
  unprefixTensors,
} from "../core/src/model/checkpoint-names.js";
import { attachLora, type LoraAdapters, loraOf, loraSpecOf } from "../core/src/model/lora.js";
import { loraSpecMetadata, mergedCheckpoint } from "../core/src/model/lora-checkpoint.js";
import { encodeAdapterBlob } from "../core/src/model/lora-files.js";
import { isModelDir, loadModel } from "../core/src/model/model-source.js";
import { hashString } from "../core/src/model/rng.js";
import { describeTokenizer, tokenizerOf } from "../core/src/model/tokenizer.js";
import { type Learner, type LearnerStepResult, sampleKl } from "./run-driver.js";

/** The model of a LoRA checkpoint with its adapters merged in (a plain model, no adapters). */
function mergedModel(checkpoint: DecodedCheckpoint): CausalLM {
  const merged = mergedCheckpoint(checkpoint);
  if (merged === null) return modelFromCheckpoint(checkpoint);
  try {
    return modelFromCheckpoint(merged.checkpoint);
  } finally {
    merged.dispose();
  }
}

/** What a resumable checkpoint says about Adam beside its moment tensors. */
export interface OptimizerInfo {
  /** "adam", or "adamw" with decoupled weight decay. */
  type: "adam" | "adamw";
  /** Updates applied so far (t of the bias corrections; it also drives the LR schedule). */
  step: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
}

/** The learner's own state beside weights and Adam: baseline and β (for checkpoints). */
export interface LearnerState {
  baseline: BaselineState;
  kl: KlControllerState;
  /** The reward normaliser's running moments per scorer; absent when normalisation is off. */
  rewardNorm?: RewardNormState;
}

/** REINFORCE-family learner on a policy model (forward(tokens) → logits [B, T, V]). */
export class ReinforceLearner implements Learner {
  /** The policy's family (transformer, gru, lstm): the learner only uses the CausalLM interface. */
  readonly modelKind: string;
  readonly contextLength: number;
  /** The model's tokenizer (see Learner.tokenizer). */
  readonly tokenizer: CheckpointTokenizer;
  private readonly adam: Adam;
  private baseline: MovingAverageBaseline;
  private kl: KlController;
  /** Reward normalisation and clipping (identity unless the run turns them on). */
  private rewardNorm: RewardNormalizer;
  /** tf variable name → parameter name (variable names carry a per-process model counter). */
  private readonly paramOf: Map<string, string>;
  /** A LoRA run's adapters (the only variables Adam trains), or null for full fine-tuning. */
  private readonly lora: LoraAdapters | null;
  /** The variables Adam updates: the adapters', or every parameter. */
  private readonly trained: tf.Variable[];
  /** SHA-256 of the frozen base's weights blob (LoRA runs), computed on first use. */
  private baseSha256: string | null = null;

  /**
   * `adapters`: a LoRA run's saved adapter tensors (resume); absent, a LoRA run attaches fresh
   * ones from the run's seed (B = 0: step 0 is the base model).
   */
  constructor(
    private readonly model: CausalLM,
    private readonly settings: RunSettings,
    adapters?: WeightMap,
  ) {
    this.modelKind = model.kind;
    this.contextLength = model.config.contextLength;
    this.tokenizer = modelIdentity(model).tokenizer ?? describeTokenizer();
    this.adam = new Adam({ learningRate: settings.learningRate, weightDecay: settings.weightDecay });
    this.baseline = new MovingAverageBaseline(settings.baselineDecay);
    this.kl = new KlController(settings.klCoef, settings.klTarget, settings.klHorizon);
    this.rewardNorm = newRewardNormalizer(settings);
    const spec = loraSpecOf(settings);
    this.lora = spec === null ? null : (loraOf(model) ?? attachLora(model, spec, adapters ?? settings.seed));
    this.trained = this.lora?.variables() ?? model.variables();
    this.paramOf = new Map(this.trained.map((v) => [v.name, v.name.slice(v.name.indexOf("/") + 1)]));
  }

  /**
   * A learner starting from the checkpoint at `path`. With `resume`, the baseline and β saved by
   * {@link saveCheckpoint} (metadata key `learnerState`) and, in a resumable checkpoint, Adam's
   * moments and update count are restored; otherwise the run's settings start them afresh (a new
   * run from a trained checkpoint).
   */
  static async fromCheckpoint(
    path: string,
    settings: RunSettings,
    opts: { resume?: boolean } = {},
  ): Promise<ReinforceLearner> {
    if (isModelDir(path)) return new ReinforceLearner(await loadModel(path), settings);
    const checkpoint = await loadCheckpoint(path);
    const saved = unprefixTensors(LORA_TENSOR_PREFIX, checkpoint.state);
    // Resuming continues the saved adapters on their base; a new run starts from the policy a
    // LoRA checkpoint holds, its adapters merged into the weights.
    const learner = new ReinforceLearner(
      opts.resume || saved.size === 0 ? modelFromCheckpoint(checkpoint) : mergedModel(checkpoint),
      settings,
      opts.resume && saved.size > 0 ? saved : undefined,
    );
    try {
      const saved = checkpoint.metadata[LEARNER_STATE_KEY];
      if (opts.resume && saved !== undefined) learner.setState(JSON.parse(saved) as LearnerState);
      const optimizer = checkpoint.metadata[OPTIMIZER_STATE_KEY];
      if (opts.resume && optimizer !== undefined)
        learner.restoreAdam(JSON.parse(optimizer), checkpoint.state);
    } catch (err) {
      learner.dispose();
      if (err instanceof CheckpointError) throw err;
      throw new CheckpointError(`${path}: cannot restore the training state: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return learner;
  }

  private restoreAdam(info: OptimizerInfo, tensors: WeightMap): void {
    const variableOf = new Map([...this.paramOf].map(([v, p]) => [p, v]));
    const moments = new Map([...tensors].filter(([name]) => name.startsWith(ADAM_TENSOR_PREFIX)));
    const state = adamStateFromTensors(info.step, moments, (param) => {
      const v = variableOf.get(param);
      if (v === undefined)
        throw new CheckpointError(`Adam moments of '${param}', which the model does not have`);
      return v;
    });
    this.adam.setState(state);
  }

  /** Baseline and β, to save with a checkpoint. */
  getState(): LearnerState {
    const state: LearnerState = { baseline: this.baseline.toState(), kl: this.kl.toState() };
    // Only when on: a run without normalisation writes the same learner state as before it existed.
    if (this.rewardNorm.enabled) state.rewardNorm = this.rewardNorm.toState();
    return state;
  }

  /** Restores {@link getState}'s output. */
  setState(state: LearnerState): void {
    this.baseline = MovingAverageBaseline.fromState(state.baseline);
    this.kl = KlController.fromState(state.kl);
    this.rewardNorm = newRewardNormalizer(this.settings, state.rewardNorm);
  }

  async step(trajectories: Trajectory[]): Promise<LearnerStepResult> {
    const s = this.settings;
    const beta = this.kl.beta;
    const inReward = s.klIn === "reward";
    // 0. Reward normalisation per scorer and clipping (when on), from statistics with this batch counted.
    const norm = this.rewardNorm.enabled ? this.rewardNorm.prepare(trajectories) : null;
    // 1. Per-token rewards r_t (a scalar goes to the last token); KL in the reward: r_t − β·KL_t.
    const pg = trajectories.map((t, i) => {
      const raw = tokenRewards(t.completionTokens.length, t.reward, t.tokenRewards);
      const adjust = norm?.adjustments[i];
      const rewards = adjust ? adjustTokenRewards(raw, adjust) : raw;
      return {
        promptTokens: t.promptTokens,
        completionTokens: t.completionTokens,
        reward: t.reward,
        tokenRewards: inReward
          ? klPenalizedRewards(rewards, t.behaviourLogprobs, t.referenceLogprobs, beta, s.klEstimator)
          : rewards,
        refLogprobs: t.referenceLogprobs,
        behaviourLogprobs: t.behaviourLogprobs,
      };
    });
    // 2. Returns-to-go R_t and advantages A_t = R_t − b (b per the configured baseline), as model input [B, T].
    const groups = trajectories.map((t) => t.promptIndex);
    const built = buildPgBatch(pg, {
      bosId: tokenizerOf(this.model).bos,
      padId: tokenizerOf(this.model).pad,
      vocabSize: this.model.config.vocabSize,
      gamma: s.gamma,
      baseline: 0,
      advantages: (returns) => computeAdvantages(returns, groups, s.baseline, this.baseline.value),
      contextLength: this.model.config.contextLength,
    });
    try {
      // 3. η_t: warm-up, then constant or cosine.
      const lr = runLearningRate(this.adam.step, {
        lr: s.learningRate,
        warmupSteps: s.warmupSteps,
        totalSteps: s.steps,
        decay: s.lrDecay,
      });
      this.adam.learningRate = lr;
      // LoRA dropout masks of this update, from the run's seed and the update count (reproducible).
      if (this.lora) this.lora.dropoutSeed = hashString(`${s.seed}/${this.adam.step}`);
      // 4. One Adam(W) step on L = −(1/N) Σ mask·s_t [+ β·KL] − c_ent·H, clipped by global norm.
      const res = await trainStep(
        (x: tf.Tensor2D) => this.model.forward(x, undefined, { sourceLengths: built.sourceLengths }),
        this.trained,
        built.tokens,
        built.batch,
        {
          klCoef: inReward ? 0 : beta,
          klEstimator: s.klEstimator,
          entropyCoef: s.entropyCoef,
          maxGradNorm: s.maxGradNorm,
          offPolicy: s.offPolicy,
          clipEpsilon: s.clipEpsilon,
          truncation: s.truncation,
        },
        this.adam,
      );
      // A non-finite gradient skipped the update: the baseline and β stay too, so the step leaves
      // no trace on the learner's state but the counted `updateSkipped`.
      if (res.applied) {
        // 5. The moving average learns from this batch only after it was used (b stays independent of it).
        this.baseline.update(built.returns);
        // 6. Adaptive β from the batch's KL in nats per sample (no-op when β is fixed).
        this.kl.update(sampleKl(trajectories), trajectories.length);
        // 7. The reward statistics with this batch counted become the run's.
        if (norm) this.rewardNorm.commit(norm);
      }
      return {
        updateSkipped: !res.applied,
        loss: res.loss,
        gradNorm: res.gradNorm,
        entropy: res.entropy,
        clipFraction: res.clipFraction,
        klCoef: beta,
        learningRate: lr,
        ...(norm ? { rewardNorm: { ...this.rewardNorm.summary(norm.next), clipped: norm.clipped } } : {}),
      };
    } finally {
      if (this.lora) this.lora.dropoutSeed = null;
      disposePgBatch(built);
    }
  }

  /**
   * The weights to publish. A LoRA run publishes its frozen base until the first update (with
   * B = 0 that is exactly the policy; it becomes the run's reference), then adapter-only blobs
   * bound to that base by its SHA-256.
   */
  async weightsBlob(): Promise<Uint8Array> {
    if (this.lora === null || this.adam.step === 0) return encodeCheckpoint(checkpointFromModel(this.model));
    this.baseSha256 ??= sha256Hex(encodeCheckpoint(checkpointFromModel(this.model)));
    return encodeAdapterBlob(this.lora, this.baseSha256);
  }

  /**
   * Weights, baseline and β; with `resumable`, also Adam's moments (`optimizer.m|v.<param>`) and
   * update count (metadata `optimizer`) plus the caller's tensors, in the same atomic write.
   */
  async saveCheckpoint(
    path: string,
    metadata: Record<string, string>,
    resumable?: { tensors: WeightMap },
  ): Promise<string> {
    const meta: Record<string, string> = {
      ...metadata,
      ...(this.lora ? loraSpecMetadata(this.lora.spec) : {}),
      [LEARNER_STATE_KEY]: JSON.stringify(this.getState()),
    };
    const adapters = this.lora ? prefixTensors(LORA_TENSOR_PREFIX, this.lora.getWeights()) : new Map();
    if (!resumable)
      return saveCheckpoint(path, { ...checkpointFromModel(this.model, meta), state: adapters });
    const adam = await this.adam.getState();
    const info: OptimizerInfo = {
      type: this.adam.weightDecay > 0 ? "adamw" : "adam",
      step: adam.step,
      beta1: this.adam.beta1,
      beta2: this.adam.beta2,
      epsilon: this.adam.epsilon,
      weightDecay: this.adam.weightDecay,
    };
    meta[OPTIMIZER_STATE_KEY] = JSON.stringify(info);
    const moments = adamStateToTensors(adam, (v) => this.paramOf.get(v) ?? v);
    return saveCheckpoint(path, {
      ...checkpointFromModel(this.model, meta),
      state: new Map([...moments, ...resumable.tensors, ...adapters]),
    });
  }

  dispose(): void {
    this.adam.dispose();
    this.lora?.dispose();
    this.model.dispose();
  }
}

/** The run's reward normaliser (settings.rewardNorm, rewardClip), from saved moments on resume. */
function newRewardNormalizer(settings: RunSettings, state?: RewardNormState): RewardNormalizer {
  return new RewardNormalizer(settings.rewardNorm === "per-scorer", settings.rewardClip, state);
}
