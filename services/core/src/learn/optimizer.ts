/**
 * One REINFORCE optimiser step: gradients of the policy-gradient loss (reinforce.ts), global-norm
 * clipping and an Adam update (adam.ts).
 */
import * as tf from "@tensorflow/tfjs";
import { type Adam, clipScale, globalGradNorm } from "./adam.js";
import { type PgBatch, type PgLossConfig, reinforceLoss } from "./reinforce.js";

/** Loss hyperparameters plus the clip threshold. */
export interface TrainStepConfig extends PgLossConfig {
  /** c of the global-norm clip (≤ 0 or ∞ = off). */
  maxGradNorm: number;
}

/** What one step did, as plain numbers for metrics. */
export interface TrainStepResult {
  /** Total loss before the update. */
  loss: number;
  /** Policy-gradient part of the loss. */
  pgLoss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Mean KL estimate to the reference over the completion tokens. */
  kl: number;
  /** Mean policy entropy over the completion tokens (nats). */
  entropy: number;
  /** Share of completion tokens whose importance ratio was clipped/truncated. */
  clipFraction: number;
  /** False when the loss or gradient was not finite and the update was skipped. */
  applied: boolean;
}

/**
 * One optimiser step: gradients of {@link reinforceLoss} w.r.t. `variables` → clip → Adam.
 * Why the finiteness check: one NaN gradient would poison every weight; the step is skipped and
 * reported (`applied: false`) instead. Every tensor it creates is disposed before it returns.
 */
export async function trainStep(
  forward: (tokens: tf.Tensor2D) => tf.Tensor3D,
  variables: readonly tf.Variable[],
  tokens: tf.Tensor2D,
  batch: PgBatch,
  cfg: TrainStepConfig,
  optimizer: Adam,
): Promise<TrainStepResult> {
  let stats: tf.Scalar[] = [];
  const { value, grads } = tf.variableGrads(() => {
    const out = reinforceLoss(forward(tokens), batch, cfg);
    stats = [tf.keep(out.pgLoss), tf.keep(out.kl), tf.keep(out.entropy), tf.keep(out.clipFraction)];
    return out.loss;
  }, [...variables]);
  const withGrad = variables.filter((v) => grads[v.name] != null);
  const gs = withGrad.map((v) => grads[v.name] as tf.Tensor);
  const globalNorm = globalGradNorm(gs);
  try {
    const [loss, gradNorm, pgLoss, kl, entropy, clipFraction] = (
      await Promise.all([value, globalNorm, ...stats].map((x) => x.data()))
    ).map((d) => d[0] as number) as [number, number, number, number, number, number];
    const applied = Number.isFinite(loss) && Number.isFinite(gradNorm);
    // g ← g·min(1, c/‖g‖), applied inside the update
    if (applied) optimizer.applyGradients(withGrad, gs, clipScale(gradNorm, cfg.maxGradNorm));
    return { loss, pgLoss, gradNorm, kl, entropy, clipFraction, applied };
  } finally {
    tf.dispose([value, globalNorm, ...stats, ...Object.values(grads)]);
  }
}
