/**
 * β of the KL penalty: fixed, or adapted towards a target KL (Ziegler et al. 2019, "Fine-Tuning
 * Language Models from Human Preferences", §2.2):
 *
 *   e = clip((KL − KL_target) / KL_target, −0.2, 0.2)
 *   β ← β·(1 + e·n / horizon)
 *
 * KL is the measured KL of the batch in nats per sample (Σ_t k1_t of a completion, averaged over
 * the batch) and n the number of samples in it. Horizon: in samples; β changes by at most a factor
 * 1 ± 0.2 per `horizon` samples. Ziegler et al. use 10 000 (our default); with 32 samples per step
 * that is at most ±0.064% per step, so a short run wanting β to move visibly sets e.g. 1 000.
 */
import { ValidationError } from "../errors.js";

/** Saved form of the controller (plain JSON, part of the learner state). */
export interface KlControllerState {
  /** Current β. */
  beta: number;
  /** Target KL (nats per sample); 0 = fixed β. */
  target: number;
  /** Horizon in samples. */
  horizon: number;
}

/** Fixed (target 0) or adaptive (target > 0) β. */
export class KlController {
  private b: number;

  constructor(
    beta: number,
    readonly target = 0,
    readonly horizon = 10_000,
  ) {
    if (!Number.isFinite(beta) || beta < 0) throw new ValidationError("klCoef", `must be ≥ 0, got ${beta}`);
    if (!Number.isFinite(target) || target < 0)
      throw new ValidationError("klTarget", `must be ≥ 0, got ${target}`);
    if (!Number.isFinite(horizon) || horizon <= 0)
      throw new ValidationError("klHorizon", `must be > 0, got ${horizon}`);
    this.b = beta;
  }

  static fromState(s: KlControllerState): KlController {
    return new KlController(s.beta, s.target, s.horizon);
  }

  /** The current β. */
  get beta(): number {
    return this.b;
  }

  /** True when β adapts (target > 0). */
  get adaptive(): boolean {
    return this.target > 0;
  }

  /** Folds one batch's measured KL (nats per sample) over n samples into β; returns the new β. */
  update(kl: number, n: number): number {
    if (!this.adaptive || !Number.isFinite(kl) || n <= 0) return this.b;
    // e = clip((KL − target)/target, −0.2, 0.2)
    const e = Math.min(0.2, Math.max(-0.2, (kl - this.target) / this.target));
    // β ← β·(1 + e·n/horizon)
    this.b = this.b * (1 + (e * n) / this.horizon);
    return this.b;
  }

  toState(): KlControllerState {
    return { beta: this.b, target: this.target, horizon: this.horizon };
  }
}
