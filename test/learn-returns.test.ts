import { describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import { MovingAverageBaseline } from "../services/core/src/learn/baseline.js";
import { returnsToGo, tokenRewards } from "../services/core/src/learn/returns.js";

describe("returns", () => {
  it("returns - returns-to-go match a hand example", () => {
    // R_2 = 2; R_1 = 0 + 0.5·2 = 1; R_0 = 1 + 0.5·1 = 1.5
    expect(returnsToGo([1, 0, 2], 0.5)).toEqual([1.5, 1, 2]);
    expect(returnsToGo([1, 1, 1], 1)).toEqual([3, 2, 1]);
    expect(returnsToGo([1, 2, 3], 0)).toEqual([1, 2, 3]);
    expect(returnsToGo([], 0.9)).toEqual([]);
  });

  it("returns - a scalar reward is credited to the last token", () => {
    expect(tokenRewards(3, 0.7)).toEqual([0, 0, 0.7]);
    expect(tokenRewards(3, 0.7, [])).toEqual([0, 0, 0.7]);
    expect(returnsToGo(tokenRewards(3, 1), 0.5)).toEqual([0.25, 0.5, 1]);
  });

  it("returns - per-token rewards are used as given", () => {
    expect(tokenRewards(2, 99, [0.1, -0.2])).toEqual([0.1, -0.2]);
  });

  it("returns - bad input is a ValidationError", () => {
    expect(() => returnsToGo([1, Number.NaN], 1)).toThrow(ValidationError);
    expect(() => returnsToGo([1], 1.5)).toThrow(ValidationError);
    expect(() => tokenRewards(0, 1)).toThrow(ValidationError);
    expect(() => tokenRewards(2, Number.POSITIVE_INFINITY)).toThrow(ValidationError);
    expect(() => tokenRewards(3, 1, [1, 2])).toThrow(/2 entries for 3/);
    expect(() => tokenRewards(1, 1, [Number.NaN])).toThrow(ValidationError);
  });
});

describe("baseline", () => {
  it("baseline - first update takes the mean, later ones the EMA", () => {
    const b = new MovingAverageBaseline(0.9);
    expect(b.value).toBe(0);
    expect(b.advantages([[1, 2]])).toEqual([[1, 2]]);
    // mean over all tokens: (1 + 2 + 3) / 3 = 2
    expect(b.update([[1, 2], [3]])).toBe(2);
    // 0.9·2 + 0.1·12 = 3
    expect(b.update([[12]])).toBeCloseTo(3, 12);
    const [a0, a1] = b.advantages([[4, 1]])[0] as number[];
    expect(a0).toBeCloseTo(1, 12);
    expect(a1).toBeCloseTo(-2, 12);
    // an empty batch leaves b alone
    expect(b.update([[]])).toBeCloseTo(3, 12);
  });

  it("baseline - state round-trips through JSON", () => {
    const a = new MovingAverageBaseline(0.8);
    a.update([[1]]);
    a.update([[2]]);
    const restored = MovingAverageBaseline.fromState(JSON.parse(JSON.stringify(a.toState())));
    expect(restored.toState()).toEqual(a.toState());
    expect(restored.update([[5]])).toBe(a.update([[5]]));
  });

  it("baseline - bad decay or state is a ValidationError", () => {
    expect(() => new MovingAverageBaseline(1)).toThrow(ValidationError);
    expect(() => MovingAverageBaseline.fromState({ value: Number.NaN, decay: 0.9, updates: 1 })).toThrow(
      ValidationError,
    );
    expect(() => new MovingAverageBaseline().update([[Number.NaN]])).toThrow(ValidationError);
  });
});
