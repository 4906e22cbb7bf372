/**
 * Reward normalisation and clipping (services/core/src/learn/reward-norm.ts): Welford's running
 * moments per scorer against a two-pass computation, the batch counted before it is normalised,
 * ABSTAIN/ERROR samples neither counted nor changed, per-token rewards scaled consistently with
 * the scalar, clipping with and without normalisation, state that moves only on commit and
 * survives JSON, and the learner writing no normaliser state when it is off.
 */
import { describe, expect, it } from "vitest";
import { ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { defaultConfig } from "../services/core/src/config/settings.js";
import {
  adjustTokenRewards,
  REWARD_NORM_EPSILON,
  RewardNormalizer,
  type RewardSample,
} from "../services/core/src/learn/reward-norm.js";
import { ReinforceLearner } from "../services/optimizer/reinforce-learner.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const ok = (scorerId: string, reward: number): RewardSample => ({
  scorerId,
  reward,
  scoreStatus: ScoreStatus.OK,
});

/** Mean and population standard deviation, two-pass. */
function moments(xs: readonly number[]): [number, number] {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [mean, Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length)];
}

describe("reward normalisation", () => {
  it("reward norm - running mean/std per scorer match a two-pass computation over every step so far", () => {
    const norm = new RewardNormalizer(true, 0);
    const a = [0.5, -0.25, 0.75, 1, 0.125];
    const b = [7, 9, 3];
    const first = norm.prepare([ok("judge", b[0] as number), ...a.slice(0, 3).map((r) => ok("afinn", r))]);
    norm.commit(first);
    const second = norm.prepare([
      ...a.slice(3).map((r) => ok("afinn", r)),
      ...b.slice(1).map((r) => ok("judge", r)),
    ]);
    norm.commit(second);
    const s = norm.summary();
    const [ma, sa] = moments(a);
    const [mb, sb] = moments(b);
    expect(s.mean.afinn).toBeCloseTo(ma, 12);
    expect(s.std.afinn).toBeCloseTo(sa, 12);
    expect(s.mean.judge).toBeCloseTo(mb, 12);
    expect(s.std.judge).toBeCloseTo(sb, 12);
    // The second batch was normalised with statistics that already counted it.
    const adj = second.adjustments[0];
    expect(adj?.reward).toBeCloseTo(((a[3] as number) - ma) / (sa + REWARD_NORM_EPSILON), 12);
  });

  it("reward norm - the first step's batch is normalised by its own statistics: mean 0, std 1", () => {
    const rewards = [0.3, -0.7, 0.9, 0.1, -0.2, 0.4];
    const batch = new RewardNormalizer(true, 0).prepare(rewards.map((r) => ok("afinn", r)));
    const [m, s] = moments(batch.adjustments.map((x) => x.reward));
    expect(m).toBeCloseTo(0, 12);
    expect(s).toBeCloseTo(1, 6);
    expect(batch.clipped).toBe(0);
  });

  it("reward norm - ABSTAIN and ERROR samples are neither counted nor changed; UNSPECIFIED counts as OK", () => {
    const norm = new RewardNormalizer(true, 0);
    const batch = norm.prepare([
      ok("afinn", 1),
      { scorerId: "afinn", reward: 100, scoreStatus: ScoreStatus.ERROR },
      { scorerId: "afinn", reward: -100, scoreStatus: ScoreStatus.ABSTAIN },
      { scorerId: "afinn", reward: 3, scoreStatus: ScoreStatus.UNSPECIFIED },
    ]);
    expect(batch.next.afinn).toEqual({ count: 2, mean: 2, m2: 2 });
    expect(batch.adjustments[1]).toEqual({ scale: 1, shift: 0, reward: 100, clipped: false });
    expect(batch.adjustments[2]).toEqual({ scale: 1, shift: 0, reward: -100, clipped: false });
    expect(batch.adjustments[3]?.reward).toBeCloseTo(1, 6);
  });

  it("reward norm - per-token rewards are scaled on every token and shifted on the last, summing to the normalised reward", () => {
    const norm = new RewardNormalizer(true, 0);
    norm.commit(norm.prepare([ok("rules", 2), ok("rules", 4)]));
    const tokens = [0.5, 0, 1, 0.5];
    const batch = norm.prepare([ok("rules", 2)]);
    const a = batch.adjustments[0];
    if (!a) throw new Error("no adjustment");
    const out = adjustTokenRewards(tokens, a);
    const sigma = batch.next.rules ? Math.sqrt(batch.next.rules.m2 / batch.next.rules.count) : Number.NaN;
    const scale = 1 / (sigma + REWARD_NORM_EPSILON);
    expect(out.slice(0, 3)).toEqual([0.5 * scale, 0, 1 * scale]);
    expect(out.reduce((x, y) => x + y, 0)).toBeCloseTo(a.reward, 9);
    expect(a.reward).toBeCloseTo((2 - 8 / 3) * scale, 9);
    // A scalar reward (one token carrying it all) gets the same result.
    expect(adjustTokenRewards([0, 0, 2], a)[2]).toBeCloseTo(a.reward, 9);
  });

  it("reward norm - clipping bounds the normalised reward to ±c and counts the clipped samples; on raw rewards without normalisation too", () => {
    const norm = new RewardNormalizer(true, 1);
    const batch = norm.prepare([0, 0, 0, 0, 0, 0, 0, 0, 10].map((r) => ok("afinn", r)));
    expect(batch.clipped).toBe(1);
    expect(batch.adjustments[8]?.reward).toBe(1);
    expect(batch.adjustments.every((x) => Math.abs(x.reward) <= 1)).toBe(true);
    const tokens = adjustTokenRewards([4, 6], batch.adjustments[8] as never);
    expect(tokens[0] as number).toBeCloseTo(4 / (Math.sqrt(10 * 10 * (8 / 81)) + REWARD_NORM_EPSILON), 9);
    expect((tokens[0] as number) + (tokens[1] as number)).toBeCloseTo(1, 9);

    const raw = new RewardNormalizer(false, 2).prepare([ok("a", 5), ok("a", -3), ok("a", 1.5)]);
    expect(raw.adjustments.map((x) => x.reward)).toEqual([2, -2, 1.5]);
    expect(raw.adjustments.map((x) => x.scale)).toEqual([1, 1, 1]);
    expect(raw.next).toEqual({});
    expect(adjustTokenRewards([1, 4], raw.adjustments[0] as never)).toEqual([1, 1]);
  });

  it("reward norm - state moves only on commit, is a copy, and a JSON round trip resumes it exactly", () => {
    const norm = new RewardNormalizer(true, 0);
    const batch = norm.prepare([ok("x", 0.1), ok("x", 0.7)]);
    expect(norm.toState()).toEqual({});
    norm.commit(batch);
    const saved = JSON.parse(JSON.stringify(norm.toState()));
    const resumed = new RewardNormalizer(true, 0, saved);
    const next = [ok("x", 0.3), ok("x", -0.9)];
    expect(resumed.prepare(next)).toEqual(norm.prepare(next));
    expect(new RewardNormalizer(false, 0).enabled).toBe(false);
  });

  it("reward norm - the learner writes no normaliser state when it is off (checkpoints as before) and its moments when on", async () => {
    const path = await writeTinyCheckpoint(3);
    const off = await ReinforceLearner.fromCheckpoint(path, defaultConfig().run);
    const on = await ReinforceLearner.fromCheckpoint(path, {
      ...defaultConfig().run,
      rewardNorm: "per-scorer",
    });
    try {
      expect(Object.keys(off.getState()).sort()).toEqual(["baseline", "kl"]);
      expect(on.getState().rewardNorm).toEqual({});
      on.setState({ ...on.getState(), rewardNorm: { afinn: { count: 2, mean: 1, m2: 0.5 } } });
      expect(on.getState().rewardNorm).toEqual({ afinn: { count: 2, mean: 1, m2: 0.5 } });
    } finally {
      off.dispose();
      on.dispose();
    }
  });
});
