/**
 * Moving-average baseline for REINFORCE.
 *
 * Subtracting a baseline b from the returns leaves the policy gradient unbiased (E[∇log π · b] = 0
 * for any b that does not depend on the action) and removes most of its variance when b tracks the
 * typical return. The seed has no baseline; with rewards that are all positive (or all negative)
 * its updates push every sampled token up (or down) and learning crawls.
 */
import { ValidationError } from "../errors.js";

/** Saved form of a baseline, for checkpoints (plain JSON). */
export interface BaselineState {
  /** Current baseline value b. */
  value: number;
  /** Decay d of b ← d·b + (1−d)·mean(R). */
  decay: number;
  /** How many batches have updated b (0 = b has never seen a return). */
  updates: number;
}

/**
 * Default decay d = 0.9: b averages roughly the last 1/(1−d) = 10 batches, long enough to smooth
 * one batch's noise, short enough to follow the reward as the policy improves.
 */
export const DEFAULT_BASELINE_DECAY = 0.9;

function checkDecay(decay: number): void {
  if (!Number.isFinite(decay) || decay < 0 || decay >= 1) {
    throw new ValidationError("baselineDecay", `must be in [0, 1), got ${decay}`);
  }
}

/**
 * b = exponential moving average of the mean return-to-go of past batches.
 *
 * Why previous batches only: advantages of a batch are computed with b before that batch updates
 * it, so b never depends on the actions it is subtracted from and the estimator stays unbiased.
 * The first update sets b to the batch mean (instead of decaying from 0), so an EMA that starts at
 * 0 does not bias b towards 0 for the first ~1/(1−d) batches.
 */
export class MovingAverageBaseline {
  private b = 0;
  private n = 0;
  private readonly d: number;

  /** @param decay d ∈ [0, 1) of b ← d·b + (1−d)·mean(R); 0 = last batch's mean only. */
  constructor(decay: number = DEFAULT_BASELINE_DECAY) {
    checkDecay(decay);
    this.d = decay;
  }

  /** Restores a baseline saved with {@link MovingAverageBaseline.toState}. */
  static fromState(state: BaselineState): MovingAverageBaseline {
    const out = new MovingAverageBaseline(state.decay);
    if (!Number.isFinite(state.value)) {
      throw new ValidationError("baseline.value", `must be finite, got ${state.value}`);
    }
    if (!Number.isInteger(state.updates) || state.updates < 0) {
      throw new ValidationError("baseline.updates", `must be an integer ≥ 0, got ${state.updates}`);
    }
    out.b = state.value;
    out.n = state.updates;
    return out;
  }

  /** The current b (0 before the first update). */
  get value(): number {
    return this.b;
  }

  /** The decay d this baseline was built with. */
  get decay(): number {
    return this.d;
  }

  /** A_t = R_t − b for every token of every trajectory, with the current b. */
  advantages(returns: readonly (readonly number[])[]): number[][] {
    return returns.map((row) => row.map((r) => r - this.b));
  }

  /**
   * Folds a batch into b: b ← mean(R) on the first call, then b ← d·b + (1−d)·mean(R), where
   * mean(R) is the mean return-to-go over all tokens of the batch (the quantity b is subtracted
   * from). A batch with no tokens leaves b unchanged. Returns the new b.
   */
  update(returns: readonly (readonly number[])[]): number {
    let sum = 0;
    let count = 0;
    for (const [i, row] of returns.entries()) {
      for (const [t, r] of row.entries()) {
        if (!Number.isFinite(r)) throw new ValidationError(`returns[${i}][${t}]`, `must be finite, got ${r}`);
        sum += r;
        count++;
      }
    }
    if (count === 0) return this.b;
    const mean = sum / count;
    // b ← d·b + (1−d)·mean(R)   (b ← mean(R) on the first batch)
    this.b = this.n === 0 ? mean : this.d * this.b + (1 - this.d) * mean;
    this.n++;
    return this.b;
  }

  /** Plain-JSON state for checkpoints; restore with {@link MovingAverageBaseline.fromState}. */
  toState(): BaselineState {
    return { value: this.b, decay: this.d, updates: this.n };
  }
}
