/**
 * Reward normalisation and clipping before a learning step (docs/architecture.md#reward-normalisation):
 * per scorer (the trajectory's scorer_id) a running mean μ and standard deviation σ of its OK
 * rewards (Welford), then r' = (r − μ)/(σ + ε), then r' clipped to ±c.
 *
 * Why in the Optimizer: the statistics are state, and the Optimizer is the service whose state
 * survives a restart (the run checkpoint); the Feedback and the Rollout hold none. Why per scorer:
 * a judge's 0–10 and a rule's −1..1 are different scales, and one run may see both (a scorer
 * swapped between attempts, or several Feedback services).
 *
 * Decisions: the statistics count the step's batch BEFORE its rewards are normalised with them, so
 * the first step already has a scale (the per-step alternative, past steps only, would leave step
 * 1 unnormalised and shift every later one by a step); only OK samples are counted (the ABSTAIN
 * and ERROR ones are excluded from the update before the learner sees them, and UNSPECIFIED is OK
 * by the contract). Per-token rewards stay consistent with the scalar: every token's reward is
 * scaled by 1/(σ + ε), the shift −μ/(σ + ε) and the clip's correction go on the last token, as
 * the scalar reward itself would, so the tokens still sum to the normalised, clipped reward.
 */
import { ScoreStatus } from "../../gen/rlaif/feedback/v1/feedback_pb.js";

/** ε of (σ + ε): keeps a scorer whose rewards were all equal (σ = 0) finite. */
export const REWARD_NORM_EPSILON = 1e-8;

/** Welford's running moments of one scorer's rewards. */
export interface WelfordState {
  count: number;
  mean: number;
  /** Σ (r − mean)², so σ² = m2 / count. */
  m2: number;
}

/** The normaliser's state, by scorer id (JSON as it is, for the checkpoint). */
export type RewardNormState = Record<string, WelfordState>;

/** What the normaliser reads of a sample (a Trajectory has these fields). */
export interface RewardSample {
  scorerId: string;
  reward: number;
  scoreStatus: ScoreStatus;
}

/** How one sample's per-token rewards change: r_t·scale on every token, + shift on the last. */
export interface RewardAdjustment {
  scale: number;
  shift: number;
  /** The reward after normalisation and clipping (what the tokens sum to). */
  reward: number;
  clipped: boolean;
}

/** One batch's adjustments and the state after counting it (not yet the normaliser's own). */
export interface PreparedBatch {
  adjustments: RewardAdjustment[];
  next: RewardNormState;
  clipped: number;
}

/** `state` with one more reward of `scorer` counted (Welford's update). */
function welfordAdd(state: RewardNormState, scorer: string, r: number): void {
  const s = state[scorer] ?? { count: 0, mean: 0, m2: 0 };
  const count = s.count + 1;
  const delta = r - s.mean;
  const mean = s.mean + delta / count;
  state[scorer] = { count, mean, m2: s.m2 + delta * (r - mean) };
}

/** σ of a scorer's moments (population: the running set is all the data there is). */
export function welfordStd(s: WelfordState): number {
  return s.count > 0 ? Math.sqrt(s.m2 / s.count) : 0;
}

/** The clip of `r` to ±c (c = 0: none). */
function clip(r: number, c: number): number {
  return c > 0 ? Math.min(c, Math.max(-c, r)) : r;
}

/** Per-token rewards `rewards` with `a` applied (a new array). */
export function adjustTokenRewards(rewards: readonly number[], a: RewardAdjustment): number[] {
  const out = rewards.map((r) => r * a.scale);
  const last = out.length - 1;
  if (last >= 0) out[last] = (out[last] as number) + a.shift;
  return out;
}

/**
 * The running normaliser of a run. `perScorer` off and `clip` 0 is the identity, and then
 * {@link enabled} is false so the learner skips it altogether (today's runs stay bitwise the same).
 */
export class RewardNormalizer {
  private state: RewardNormState;

  constructor(
    private readonly perScorer: boolean,
    private readonly clipAt: number,
    state: RewardNormState = {},
  ) {
    this.state = structuredClone(state);
  }

  /** Whether it changes any reward. */
  get enabled(): boolean {
    return this.perScorer || this.clipAt > 0;
  }

  /** The state to checkpoint (a copy). */
  toState(): RewardNormState {
    return structuredClone(this.state);
  }

  /**
   * The adjustments of one batch, from the statistics with this batch's OK rewards counted (in
   * order); the normaliser's own state moves only on {@link commit}, so an update that is skipped
   * leaves no trace.
   */
  prepare(samples: readonly RewardSample[]): PreparedBatch {
    const next = structuredClone(this.state);
    if (this.perScorer) {
      for (const t of samples) if (isOk(t.scoreStatus)) welfordAdd(next, t.scorerId, t.reward);
    }
    let clipped = 0;
    const adjustments = samples.map((t): RewardAdjustment => {
      const stats = this.perScorer && isOk(t.scoreStatus) ? next[t.scorerId] : undefined;
      const scale = stats ? 1 / (welfordStd(stats) + REWARD_NORM_EPSILON) : 1;
      const normalised = stats ? (t.reward - stats.mean) * scale : t.reward;
      const reward = clip(normalised, this.clipAt);
      if (reward !== normalised) clipped++;
      // Shift on the last token: −μ·scale moves the sum to the normalised reward, then the clip's correction.
      const shift = (stats ? -stats.mean * scale : 0) + (reward - normalised);
      return { scale, shift, reward, clipped: reward !== normalised };
    });
    return { adjustments, next, clipped };
  }

  /** Adopt a prepared batch's statistics (after its update was applied). */
  commit(batch: PreparedBatch): void {
    this.state = batch.next;
  }

  /** Running mean and σ per scorer (of the normaliser, or of a prepared batch's `next`), for the step's metrics. */
  summary(state: RewardNormState = this.state): {
    mean: Record<string, number>;
    std: Record<string, number>;
  } {
    const mean: Record<string, number> = {};
    const std: Record<string, number> = {};
    for (const [id, s] of Object.entries(state)) {
      mean[id] = s.mean;
      std[id] = welfordStd(s);
    }
    return { mean, std };
  }
}

/** OK by the contract: UNSPECIFIED is read as OK. */
function isOk(status: ScoreStatus): boolean {
  return status === ScoreStatus.OK || status === ScoreStatus.UNSPECIFIED;
}
