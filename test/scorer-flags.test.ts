/**
 * The built-in scorer's flags (core/src/config/scorer-flags.ts): what `rlaif up` hands its
 * Feedback process, and the refusal of an external FeedbackService named beside a built-in model
 * scorer, in-process and through the CLI.
 */
import { describe, expect, it } from "vitest";
import {
  changedSettingArgs,
  checkOneFeedback,
  SCORER_FLAGS,
} from "../services/core/src/config/scorer-flags.js";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";

describe("scorer flags", () => {
  it("scorer flags - only the settings that differ from their defaults are handed on, as flags", () => {
    const s = defaultConfig().services;
    expect(changedSettingArgs(s, [...SCORER_FLAGS, "backend"])).toEqual([]);
    s.judgeUrl = "http://127.0.0.1:8000/v1";
    s.judgeModel = "judge";
    s.judgeWeight = 0.5;
    s.feedbackRules = "afinn:1,length(5-30):0.3";
    const args = changedSettingArgs(s, SCORER_FLAGS);
    const pairs = new Map<string, string>();
    for (let i = 0; i < args.length; i += 2) pairs.set(args[i] as string, args[i + 1] as string);
    expect(Object.fromEntries(pairs)).toEqual({
      "--feedback-rules": "afinn:1,length(5-30):0.3",
      "--judge-url": "http://127.0.0.1:8000/v1",
      "--judge-model": "judge",
      "--judge-weight": "0.5",
    });
    // A flag outside the list is not handed on, changed or not.
    s.rpcTimeoutMs = 1234;
    expect(changedSettingArgs(s, SCORER_FLAGS)).not.toContain("--rpc-timeout-ms");
  });

  it("scorer flags - an external FeedbackService beside a built-in model scorer is refused", () => {
    const s = defaultConfig().services;
    s.feedbackAddress = "127.0.0.1:50053";
    expect(() => checkOneFeedback(s)).not.toThrow();
    s.rewardModel = "rm/";
    expect(() => checkOneFeedback(s)).toThrow(
      /--feedback-address .* --reward-model a built-in scorer: give one of them/,
    );
  });

  it("scorer flags - rlaif up refuses --feedback-address with --judge-url (exit 2) before starting anything", async () => {
    const r = await startRlaif([
      "up",
      "--feedback-address",
      "127.0.0.1:1",
      "--judge-url",
      "http://127.0.0.1:1/v1",
      "--judge-model",
      "m",
    ]).done;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /--feedback-address names an external FeedbackService, and --judge-url a built-in scorer/,
    );
  }, 120_000);
});
