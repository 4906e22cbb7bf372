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

  it("feedback scorer - per-byte rewards credit each sentiment word at its last byte and sum to the reward", () => {
    const text = "a good day, not bad";
    const s = scoreCompletion(text);
    expect(s.byteRewards).toHaveLength(Buffer.byteLength(text));
    // "good" +3 → tanh(3/4) on byte 5 ('d'); negated "bad" +3 → tanh(6/4) − tanh(3/4) on the last byte
    expect(s.byteRewards[5]).toBeCloseTo(Math.tanh(3 / 4), 12);
    expect(s.byteRewards[text.length - 1]).toBeCloseTo(Math.tanh(6 / 4) - Math.tanh(3 / 4), 12);
    const sum = s.byteRewards.reduce((a, b) => a + b, 0);
    expect(sum).toBeCloseTo(s.reward, 12);
    // every other byte except the last carries nothing
    s.byteRewards.forEach((r, i) => {
      if (i !== 5 && i !== text.length - 1) expect(r).toBe(0);
    });
  });

  it("feedback scorer - penalties go on the last byte; multi-byte text is located by UTF-8 offsets", () => {
    const spam = scoreCompletion("good good");
    expect(spam.byteRewards[3]).toBeCloseTo(Math.tanh(3 / 4), 12);
    // the second "good" adds tanh(6/4) − tanh(3/4); the repetition penalty lands on the last byte
    expect(spam.byteRewards.reduce((a, b) => a + b, 0)).toBeCloseTo(spam.reward, 12);
    const accented = scoreCompletion("\u00e9t\u00e9 good"); // "été" is 5 bytes, then " good"
    expect(accented.byteRewards).toHaveLength(10);
    expect(accented.byteRewards[9]).toBeCloseTo(accented.reward, 12);
    expect(accented.byteRewards.slice(0, 9).every((r) => r === 0)).toBe(true);
  });

  it("feedback scorer - no per-byte rewards when positions are unknown or there are no words", () => {
    expect(scoreCompletion("").byteRewards).toEqual([]);
    expect(scoreCompletion("...").byteRewards).toEqual([]);
    // not NFC: normalising would move byte offsets
    expect(scoreCompletion("cafe\u0301 good").byteRewards).toEqual([]);
  });
});
