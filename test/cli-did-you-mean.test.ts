/** The "did you mean" helper behind unknown flags, commands and services (and config keys). */
import { describe, expect, it } from "vitest";
import { closestNames, didYouMean, editDistance } from "../services/core/src/config/did-you-mean.js";

const FLAGS = ["steps", "prompts-per-step", "samples-per-prompt", "lr", "lr-decay", "seed", "checkpoint"];

describe("did you mean", () => {
  it("did-you-mean - edit distance counts a swap of neighbours as one edit", () => {
    expect(editDistance("steps", "steps")).toBe(0);
    expect(editDistance("stpes", "steps")).toBe(1);
    expect(editDistance("step", "steps")).toBe(1);
    expect(editDistance("seeds", "seed")).toBe(1);
    expect(editDistance("kitten", "sitting")).toBe(3);
    expect(editDistance("", "abc")).toBe(3);
  });

  it("did-you-mean - a typo finds its name, an unrelated word finds nothing", () => {
    expect(closestNames("stpes", FLAGS)).toEqual(["steps"]);
    expect(closestNames("prompt-per-step", FLAGS)).toEqual(["prompts-per-step"]);
    expect(closestNames("CHECKPIONT", FLAGS)).toEqual(["checkpoint"]);
    expect(closestNames("lr-decy", FLAGS)).toEqual(["lr-decay"]);
    expect(closestNames("bogus", FLAGS)).toEqual([]);
    expect(closestNames("x", FLAGS)).toEqual([]);
  });

  it("did-you-mean - the hint quotes one or several equally close names", () => {
    expect(didYouMean("stpes", FLAGS, (n) => `--${n}`)).toBe(" (did you mean --steps?)");
    expect(didYouMean("bogus", FLAGS)).toBe("");
    expect(didYouMean("sed", ["seed", "send", "steps"])).toBe(' (did you mean "seed" or "send"?)');
  });
});
