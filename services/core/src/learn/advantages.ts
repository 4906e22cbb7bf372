/**
 * Advantages A_{i,t} from returns-to-go R_{i,t} (trajectory i, completion token t), with the
 * baselines the REINFORCE family uses.
 *
 * Per-token returns-to-go minus a per-sample baseline: every baseline below is one number b_i per
 * trajectory (computed from *sequence* returns R_{i,0}, or for "batch" from all token returns),
 * subtracted from each token's return-to-go R_{i,t}. With a scalar terminal reward and γ = 1,
 * R_{i,t} = R_{i,0} for every t, so this is exactly the per-sequence formulation of RLOO / GRPO.
 * A baseline that does not depend on sample i's own actions keeps ∇J unbiased (RLOO, moving
 * average); GRPO's and REINFORCE++'s normalisations include sample i itself, so they are slightly
 * biased but lower-variance, as in their papers.
 */
import type { BaselineKind } from "../config/settings.js";
import { ValidationError } from "../errors.js";

/** ε of the std normalisations (GRPO's 1e-4 would let tiny std blow up less; 1e-6 is closer to exact). */
export const NORM_EPS = 1e-6;

/**
 * Divisor of a std normalisation: σ + ε, or 1 when σ ≤ ε. Returns that are all equal (a group of
 * one sample, G completions scored alike) carry no preference; dividing by ~ε would turn the
 * per-token differences R_t − R_0 (per-token rewards, γ < 1, KL in the reward) into advantages
 * of ~1e6, so such a group is only centred.
 */
function normaliser(sigma: number): number {
  return sigma > NORM_EPS ? sigma + NORM_EPS : 1;
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
}

/** Population standard deviation √((1/n) Σ (x − mean)²). */
function std(xs: readonly number[]): number {
  const m = mean(xs);
  return Math.sqrt(mean(xs.map((x) => (x - m) ** 2)));
}

/** Indices of the trajectories that share a prompt, in order of first appearance. */
function groupsOf(groupIds: readonly number[]): number[][] {
  const byId = new Map<number, number[]>();
  for (const [i, g] of groupIds.entries()) {
    const members = byId.get(g);
    if (members) members.push(i);
    else byId.set(g, [i]);
  }
  return [...byId.values()];
}

/**
 * A_{i,t} for every trajectory i and completion token t.
 *
 * @param returns R_{i,t} returns-to-go per trajectory (each row ≥ 1 token).
 * @param groupIds the prompt of each trajectory (same id = same prompt, the G samples of a group).
 * @param kind which baseline.
 * @param movingAverage b of the moving-average baseline (used only for that kind).
 */
export function computeAdvantages(
  returns: readonly (readonly number[])[],
  groupIds: readonly number[],
  kind: BaselineKind,
  movingAverage = 0,
): number[][] {
  if (groupIds.length !== returns.length) {
    throw new ValidationError(
      "groupIds",
      `has ${groupIds.length} entries for ${returns.length} trajectories`,
    );
  }
  // Sequence return R_{i,0} of each trajectory (the whole completion's discounted return).
  const seq = returns.map((row) => row[0] ?? 0);
  switch (kind) {
    case "none":
      // A_{i,t} = R_{i,t}
      return returns.map((row) => [...row]);
    case "moving-average":
      // A_{i,t} = R_{i,t} − b,  b the EMA of past batches' mean return (learn/baseline.ts)
      return returns.map((row) => row.map((r) => r - movingAverage));
    case "rloo": {
      const b = new Array<number>(returns.length).fill(0);
      for (const g of groupsOf(groupIds)) {
        const sum = g.reduce((s, i) => s + (seq[i] as number), 0);
        for (const i of g) {
          // b_i = (1/(G−1)) Σ_{j≠i} R_{j,0}   (G = 1: no other sample, b_i = 0)
          b[i] = g.length > 1 ? (sum - (seq[i] as number)) / (g.length - 1) : 0;
        }
      }
      // A_{i,t} = R_{i,t} − b_i
      return returns.map((row, i) => row.map((r) => r - (b[i] as number)));
    }
    case "group": {
      const mu = new Array<number>(returns.length).fill(0);
      const sd = new Array<number>(returns.length).fill(0);
      for (const g of groupsOf(groupIds)) {
        const rs = g.map((i) => seq[i] as number);
        const [m, s] = [mean(rs), std(rs)];
        for (const i of g) [mu[i], sd[i]] = [m, s];
      }
      // A_{i,t} = (R_{i,t} − mean_group R_0) / (std_group R_0 + ε)   (divisor 1 when std ≤ ε)
      return returns.map((row, i) => row.map((r) => (r - (mu[i] as number)) / normaliser(sd[i] as number)));
    }
    case "batch": {
      const all = returns.flat();
      const [m, s] = [mean(all), std(all)];
      // A_{i,t} = (R_{i,t} − mean_batch R) / (std_batch R + ε), over every token of the batch (divisor 1 when std ≤ ε)
      return returns.map((row) => row.map((r) => (r - m) / normaliser(s)));
    }
    default:
      throw new ValidationError("baseline", `unknown baseline ${String(kind)}`);
  }
}
