/**
 * Optimisation utilities missing from TensorFlow.js: AdamW (decoupled weight decay),
 * global-norm gradient clipping and a warm-up + cosine learning-rate schedule.
 *
 * `tf.train.adamw` and `tf.clipByGlobalNorm` do not exist (NOTES-platform.md), and pre-training
 * and the policy-gradient learner need the same update rule, so it lives here once.
 */
import * as tf from "@tensorflow/tfjs";

/** Hyperparameters of AdamW. */
export interface AdamWOptions {
  /** Decay of the first-moment average (default 0.9). */
  beta1?: number;
  /** Decay of the second-moment average (default 0.99: small batches are noisy). */
  beta2?: number;
  /** Added to √v̂ to avoid division by zero (default 1e-8). */
  epsilon?: number;
  /** Decoupled weight decay applied to matrices only (rank ≥ 2; default 0). */
  weightDecay?: number;
}

/** AdamW over a fixed set of variables; gradients are keyed by `variable.name` (as from `tf.variableGrads`). */
export class AdamW {
  private readonly vars: tf.Variable[];
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  private readonly opts: Required<AdamWOptions>;
  /** Number of updates applied so far (drives bias correction). */
  step = 0;

  constructor(variables: tf.Variable[], options: AdamWOptions = {}) {
    this.vars = variables;
    this.opts = { beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0, ...options };
    for (const x of variables) {
      this.m.set(x.name, tf.variable(tf.zerosLike(x), false));
      this.v.set(x.name, tf.variable(tf.zerosLike(x), false));
    }
  }

  /** Applies one update with learning rate `lr`. Variables without a gradient are left alone. */
  apply(grads: tf.NamedTensorMap, lr: number): void {
    this.step++;
    const { beta1: b1, beta2: b2, epsilon, weightDecay } = this.opts;
    const c1 = 1 - b1 ** this.step;
    const c2 = 1 - b2 ** this.step;
    tf.tidy(() => {
      for (const x of this.vars) {
        const g = grads[x.name];
        if (g === undefined) continue;
        const m = this.m.get(x.name) as tf.Variable;
        const v = this.v.get(x.name) as tf.Variable;
        // m = β₁ m + (1 − β₁) g
        const m1 = tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1));
        // v = β₂ v + (1 − β₂) g²
        const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2));
        m.assign(m1);
        v.assign(v1);
        // Δ = (m / c₁) / (√(v / c₂) + ε)
        let update = tf.div(tf.div(m1, c1), tf.add(tf.sqrt(tf.div(v1, c2)), epsilon));
        // decoupled decay: Δ += λ θ (matrices only)
        if (weightDecay > 0 && x.rank >= 2) update = tf.add(update, tf.mul(x, weightDecay));
        // θ = θ − η Δ
        x.assign(tf.sub(x, tf.mul(update, lr)));
      }
    });
  }

  /** Frees the moment estimates. */
  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}

/**
 * Scales all gradients by min(1, maxNorm / ‖g‖) where ‖g‖ is the global L2 norm over every
 * tensor. Returns new tensors (the caller disposes both maps) and the norm before clipping.
 */
export function clipByGlobalNorm(
  grads: tf.NamedTensorMap,
  maxNorm: number,
): { grads: tf.NamedTensorMap; norm: number } {
  const names = Object.keys(grads);
  // ‖g‖ = √(Σ_i Σ g_i²)
  const norm = tf.tidy(
    () =>
      tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n] as tf.Tensor))))).dataSync()[0] as number,
  );
  const scale = Number.isFinite(norm) && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
  const out: tf.NamedTensorMap = {};
  for (const n of names) out[n] = tf.tidy(() => tf.mul(grads[n] as tf.Tensor, scale));
  return { grads: out, norm };
}

/** Settings of `learningRate`. */
export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Linear warm-up from 0 over this many steps. */
  warmupSteps: number;
  /** Step at which the cosine reaches its floor. */
  totalSteps: number;
  /** Floor as a fraction of `lr` (default 0.1). */
  minRatio?: number;
}

/** Learning rate at `step` (0-based): linear warm-up, then cosine decay to `minRatio · lr`. */
export function learningRate(step: number, o: ScheduleOptions): number {
  const floor = o.lr * (o.minRatio ?? 0.1);
  if (step < o.warmupSteps) return (o.lr * (step + 1)) / o.warmupSteps;
  const span = Math.max(1, o.totalSteps - o.warmupSteps);
  const progress = Math.min(1, (step - o.warmupSteps) / span);
  return floor + 0.5 * (o.lr - floor) * (1 + Math.cos(Math.PI * progress));
}
