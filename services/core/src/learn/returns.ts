/**
 * Per-token rewards and discounted returns-to-go.
 *
 * The seed multiplies every step's log-probability by the whole episode's return R = Σ_t γ^t r_t.
 * A token cannot influence rewards paid before it was chosen, so crediting it with them only adds
 * variance. Here each token t is credited with its return-to-go R_t = Σ_{k≥t} γ^{k−t} r_k, the
 * standard REINFORCE estimator that keeps the expectation of the seed's gradient.
 */
import { ValidationError } from "../errors.js";

/** Throws a ValidationError unless every entry of `values` is a finite number. */
function assertFinite(values: readonly number[], field: string): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new ValidationError(`${field}[${i}]`, `must be a finite number, got ${String(v)}`);
    }
  }
}

/**
 * Discounted returns-to-go R_t = Σ_{k≥t} γ^{k−t} r_k of one trajectory's per-token rewards.
 *
 * Why a backward recursion (R_t = r_t + γ·R_{t+1}): O(T) and it adds the rewards in the same order
 * as the definition read from the end, so float rounding is small and deterministic.
 *
 * @param rewards r_0 … r_{T−1}, one per completion token (finite).
 * @param gamma discount γ ∈ [0, 1]; γ = 1 credits every earlier token with the full later reward.
 * @returns R_0 … R_{T−1}, same length as `rewards`.
 */
export function returnsToGo(rewards: readonly number[], gamma: number): number[] {
  if (!Number.isFinite(gamma) || gamma < 0 || gamma > 1) {
    throw new ValidationError("gamma", `must be in [0, 1], got ${gamma}`);
  }
  assertFinite(rewards, "rewards");
  const out = new Array<number>(rewards.length);
  let running = 0;
  for (let t = rewards.length - 1; t >= 0; t--) {
    // R_t = r_t + γ·R_{t+1}
    running = (rewards[t] as number) + gamma * running;
    out[t] = running;
  }
  return out;
}

/**
 * The per-token reward vector r_0 … r_{length−1} of one completion.
 *
 * Why: the Feedback contract allows either a scalar reward for the whole completion or one reward
 * per completion token; the learner wants a single shape. A scalar is a terminal reward, so it is
 * credited to the last token (the one that completed the text) and every earlier token receives it
 * through the returns-to-go. Per-token rewards are used as given.
 *
 * @param length number of completion tokens (≥ 1: a completion with no token has no action to credit).
 * @param scalarReward the whole-completion reward (finite); ignored when `perToken` is non-empty.
 * @param perToken optional per-token rewards; empty or absent means "use the scalar".
 */
export function tokenRewards(length: number, scalarReward: number, perToken?: readonly number[]): number[] {
  if (!Number.isInteger(length) || length < 1) {
    throw new ValidationError(
      "length",
      `must be an integer ≥ 1 (a completion needs a token to carry its reward), got ${length}`,
    );
  }
  if (perToken !== undefined && perToken.length > 0) {
    if (perToken.length !== length) {
      throw new ValidationError(
        "tokenRewards",
        `has ${perToken.length} entries for ${length} completion tokens`,
      );
    }
    assertFinite(perToken, "tokenRewards");
    return [...perToken];
  }
  if (typeof scalarReward !== "number" || !Number.isFinite(scalarReward)) {
    throw new ValidationError("reward", `must be a finite number, got ${String(scalarReward)}`);
  }
  const out = new Array<number>(length).fill(0);
  out[length - 1] = scalarReward;
  return out;
}
