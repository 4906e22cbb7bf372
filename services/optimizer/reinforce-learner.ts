/**
 * The Optimizer's learner: the trainable policy, Adam, and the moving-average baseline, applying
 * REINFORCE as the seed states it, with the fixes a real system needs (DESIGN §1):
 *
 *   J(θ) = E_πθ[Σ_t γ^t r_t]
 *   ∇J ≈ Σ_t ∇log π_θ(y_t | x, y_<t) · (R_t − b),   R_t = Σ_{k≥t} γ^{k−t} r_k
 *
 * with sampled actions (the Policy samples), only the chosen tokens' log-probs, a baseline b,
 * and the KL to the frozen reference folded into the per-token reward:
 *
 *   r_t ← r_t − β (log π_behaviour(y_t) − log π_ref(y_t))     (k1 estimator, in the reward)
 *
 * In the reward the k1 estimate shapes the returns and so pulls toward the reference; in the loss
 * k1's gradient would average to zero under on-policy sampling (see learn/kl.ts).
 */
import type * as tf from "@tensorflow/tfjs";
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { sha256Hex } from "../core/src/bus/memory-bus.js";
import type { RunSettings } from "../core/src/config/defaults.js";
import { MovingAverageBaseline } from "../core/src/learn/baseline.js";
import { klPenalizedRewards } from "../core/src/learn/kl.js";
import { Adam, trainStep } from "../core/src/learn/optimizer.js";
import { buildPgBatch, disposePgBatch } from "../core/src/learn/reinforce.js";
import { tokenRewards } from "../core/src/learn/returns.js";
import {
  checkpointFromModel,
  encodeCheckpoint,
  loadCheckpoint,
  modelFromCheckpoint,
  saveCheckpoint,
  TRANSFORMER_KIND,
} from "../core/src/model/checkpoint.js";
import { BOS, EOS } from "../core/src/model/tokenizer.js";
import type { Transformer } from "../core/src/model/transformer.js";
import type { Learner } from "./run-driver.js";

/** REINFORCE with a moving-average baseline and KL-in-reward, on a Transformer policy. */
export class ReinforceLearner implements Learner {
  readonly modelKind = TRANSFORMER_KIND;
  readonly contextLength: number;
  private readonly adam: Adam;
  private readonly baseline: MovingAverageBaseline;

  constructor(
    private readonly model: Transformer,
    private readonly settings: RunSettings,
  ) {
    this.contextLength = model.config.contextLength;
    this.adam = new Adam({ learningRate: settings.learningRate });
    this.baseline = new MovingAverageBaseline(settings.baselineDecay);
  }

  /** A learner starting from the checkpoint at `path`. */
  static async fromCheckpoint(path: string, settings: RunSettings): Promise<ReinforceLearner> {
    return new ReinforceLearner(modelFromCheckpoint(await loadCheckpoint(path)), settings);
  }

  async step(trajectories: Trajectory[]): Promise<{ loss: number; gradNorm: number; entropy: number }> {
    const s = this.settings;
    // 1. Per-token rewards: the feedback's r_t (a scalar goes to the last token), minus β·k1_t.
    const pg = trajectories.map((t) => {
      const rewards = tokenRewards(t.completionTokens.length, t.reward, t.tokenRewards);
      return {
        promptTokens: t.promptTokens,
        completionTokens: t.completionTokens,
        reward: t.reward,
        tokenRewards: klPenalizedRewards(rewards, t.behaviourLogprobs, t.referenceLogprobs, s.klCoef),
        refLogprobs: t.referenceLogprobs,
      };
    });
    // 2. Returns-to-go R_t and advantages A_t = R_t − b, laid out as model input [B, T].
    const built = buildPgBatch(pg, {
      bosId: BOS,
      padId: EOS,
      vocabSize: this.model.config.vocabSize,
      gamma: s.gamma,
      baseline: this.baseline.value,
      contextLength: this.model.config.contextLength,
    });
    try {
      // 3. One Adam step on L = −(1/N) Σ mask·log π_θ(a_t|s_t)·A_t − c_ent·H, clipped by global norm.
      const res = await trainStep(
        (x: tf.Tensor2D) => this.model.forward(x),
        this.model.variables(),
        built.tokens,
        built.batch,
        { klCoef: 0, klEstimator: "k1", entropyCoef: s.entropyCoef, maxGradNorm: s.maxGradNorm },
        this.adam,
      );
      // 4. The baseline learns from this batch only after it was used (b stays independent of it).
      this.baseline.update(built.returns);
      return { loss: res.loss, gradNorm: res.gradNorm, entropy: res.entropy };
    } finally {
      disposePgBatch(built);
    }
  }

  weightsBlob(): Uint8Array {
    return encodeCheckpoint(checkpointFromModel(this.model));
  }

  async saveCheckpoint(path: string, metadata: Record<string, string>): Promise<string> {
    const checkpoint = checkpointFromModel(this.model, metadata);
    await saveCheckpoint(path, checkpoint);
    return sha256Hex(encodeCheckpoint(checkpoint));
  }

  dispose(): void {
    this.adam.dispose();
    this.model.dispose();
  }
}
