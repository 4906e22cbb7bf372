import { describe, expect, it } from "vitest";
import { RULE_SCORER_ID, scoreCompletion } from "../services/feedback/scorer.js";

describe("feedback scorer", () => {
  it("feedback scorer - positive text scores above 0", () => {
    const s = scoreCompletion("What a wonderful day, I love it!");
    // love +3, wonderful +4 → tanh(7/4)
    expect(s.reward).toBeCloseTo(Math.tanh(7 / 4), 12);
    expect(s.rationale).toContain('"wonderful" +4');
    expect(s.scorerId).toBe(RULE_SCORER_ID);
    expect(s.scorerVersion).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("feedback scorer - negative text scores below 0", () => {
    const s = scoreCompletion("This is terrible and I hate it.");
    expect(s.reward).toBeCloseTo(Math.tanh(-6 / 4), 12);
    expect(scoreCompletion("I am not happy").reward).toBeLessThan(0);
  });

  it("feedback scorer - neutral text scores about 0", () => {
    expect(scoreCompletion("The cat sat on the mat near the door.").reward).toBe(0);
  });

  it("feedback scorer - phrases and hyphenated words come from the lexicon", () => {
    // "does not work" is a −3 phrase, not "not" + "work"; "well-being" is +2
    expect(scoreCompletion("it does not work").reward).toBeCloseTo(Math.tanh(-3 / 4), 12);
    expect(scoreCompletion("for your well-being").reward).toBeCloseTo(Math.tanh(2 / 4), 12);
  });

  it("feedback scorer - repetition is penalised", () => {
    const once = scoreCompletion("good").reward;
    const spam = scoreCompletion("good good good good good good");
    expect(spam.reward).toBeLessThan(once);
    expect(spam.reward).toBeLessThanOrEqual(0.01);
    expect(spam.rationale).toContain("repeated words");
    const run = scoreCompletion("nice!!!!!!!!!!!!");
    expect(run.reward).toBeLessThan(scoreCompletion("nice!").reward);
    expect(run.rationale).toContain("character runs");
  });

  it("feedback scorer - empty completion is penalised", () => {
    for (const text of ["", "   \n"]) {
      const s = scoreCompletion(text);
      expect(s.reward).toBe(-1);
      expect(s.rationale).toContain("empty");
    }
  });

  it("feedback scorer - a completion without words (punctuation only) is penalised like an empty one", () => {
    for (const text of [".", " !! ", "...,"]) {
      const s = scoreCompletion(text);
      expect(s.reward).toBe(-1);
      expect(s.rationale).toContain("no words");
    }
    // One real word is enough to be scored normally.
    expect(scoreCompletion("fine.").reward).toBeGreaterThan(-1);
  });

  it("feedback scorer - junk bytes are penalised", () => {
    expect(scoreCompletion("hello \uFFFD\uFFFD\u0001").reward).toBeLessThan(scoreCompletion("hello").reward);
  });

  it("feedback scorer - deterministic and bounded", () => {
    const texts = ["I love love love this", "awful, awful, awful!", "ok", "\u00e9t\u00e9 na\u00efve"];
    for (const t of texts) {
      const a = scoreCompletion(t);
      expect(scoreCompletion(t)).toEqual(a);
      expect(Math.abs(a.reward)).toBeLessThanOrEqual(1);
    }
  });
});
