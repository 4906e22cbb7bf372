/**
 * The declarative validation rules: every rule constructor, path naming (proto field names,
 * list indices, nested messages) and a selection of the API's real rules.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RunConfigSchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { ScoreResponseSchema } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { StartRunRequestSchema } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import {
  GenerateRequestSchema,
  LogprobsRequestSchema,
  WeightsSelectorSchema,
} from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { ValidationError } from "../services/core/src/errors.js";
import {
  generateRequestRules,
  logprobsRequestRules,
  REQUEST_RULES,
  scoreRequestRules,
  scoreResponseRules,
  startRunRequestRules,
} from "../services/core/src/grpc/rules.js";
import {
  check,
  definedEnum,
  defineRules,
  each,
  eachString,
  exactItems,
  finite,
  max,
  maxBytes,
  maxItems,
  min,
  minItems,
  nested,
  nonEmpty,
  pattern,
  type Rule,
  range,
  required,
  validate,
} from "../services/core/src/grpc/validation.js";

/** The reason a rule gives for a value, or undefined when it passes. */
const why = <T>(rule: Rule<T>, value: T) => rule(value)?.reason;

/** The ValidationError `fn` throws, as "field: reason". */
function failure(fn: () => void): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return (err as ValidationError).message;
  }
  return undefined;
}

const goodConfig = {
  steps: 10,
  promptsPerStep: 4,
  samplesPerPrompt: 4,
  learningRate: 1e-3,
  gamma: 1,
  publishEvery: 1,
  baselineDecay: 0.9,
};

describe("validation rule constructors", () => {
  it("items - minItems, maxItems, exactItems count list entries", () => {
    expect(why(minItems(1), [])).toBe("must have at least 1 item, got 0");
    expect(why(minItems(1), [1])).toBeUndefined();
    expect(why(maxItems(2), [1, 2, 3])).toBe("must have at most 2 items, got 3");
    expect(why(maxItems(2), [1, 2])).toBeUndefined();
    expect(why(exactItems(2), [1])).toBe("must have exactly 2 items, got 1");
    expect(why(exactItems(2), [1, 2])).toBeUndefined();
  });

  it("numbers - range, min, max and finite, with NaN always failing", () => {
    expect(why(range(0, 10), 12)).toBe("must be between 0 and 10, got 12");
    expect(why(range(0, 10), 10)).toBeUndefined();
    expect(why(range(0, 10), Number.NaN)).toBe("must be between 0 and 10, got NaN");
    expect(why(range(0, 1, { minExclusive: true }), 0)).toBe("must be in (0, 1], got 0");
    expect(why(range(0, 1, { maxExclusive: true }), 1)).toBe("must be in [0, 1), got 1");
    expect(why(range(0, 1, { maxExclusive: true }), 0)).toBeUndefined();
    expect(why(min(0), -0.5)).toBe("must be at least 0, got -0.5");
    expect(why(min(0), Number.NaN)).toBe("must be at least 0, got NaN");
    expect(why(max(64), 65)).toBe("must be at most 64, got 65");
    expect(why(finite(), Number.POSITIVE_INFINITY)).toBe("must be finite, got Infinity");
    expect(why(finite(), 3)).toBeUndefined();
    // float32 noise is not shown to the user
    expect(why(range(0, 0.05), Math.fround(0.1))).toBe("must be between 0 and 0.05, got 0.1");
  });

  it("strings - nonEmpty, maxBytes counts UTF-8 bytes, pattern quotes the value", () => {
    expect(why(nonEmpty(), "")).toBe("must not be empty");
    expect(why(nonEmpty(), [])).toBe("must not be empty");
    expect(why(nonEmpty(), "x")).toBeUndefined();
    expect(why(maxBytes(4), "ééé")).toBe("must be at most 4 bytes of UTF-8, got 6");
    expect(why(maxBytes(4), "abcd")).toBeUndefined();
    expect(why(pattern(/^[a-z]+$/, "lower-case letters"), "A b")).toBe(
      'must be lower-case letters, got "A b"',
    );
    expect(why(pattern(/^[a-z]+$/), "1")).toBe('must be matching /^[a-z]+$/, got "1"');
  });

  it("fields - required, definedEnum and check", () => {
    expect(why(required(), undefined)).toBe("is required");
    expect(why(required(), {})).toBeUndefined();
    expect(why(definedEnum(WeightsSelectorSchema), 2)).toBeUndefined();
    expect(why(definedEnum(WeightsSelectorSchema), 9)).toMatch(
      /^must be one of WEIGHTS_SELECTOR_UNSPECIFIED, .*, got 9$/,
    );
    expect(
      why(
        check<number>(
          (n) => n % 2 === 0,
          (n) => `must be even, got ${n}`,
        ),
        3,
      ),
    ).toBe("must be even, got 3");
  });

  it("each - names the failing item and stops at the first violation", () => {
    expect(each(max(3))([1, 5, 9])).toEqual({ at: "[1]", reason: "must be at most 3, got 5" });
    expect(eachString(nonEmpty(), maxBytes(2))(["ab", "abc"])).toEqual({
      at: "[1]",
      reason: "must be at most 2 bytes of UTF-8, got 3",
    });
    expect(each(max(3))([])).toBeUndefined();
  });

  it("defineRules - uses proto field names in paths, nests messages, skips unset sub-messages", () => {
    const rules = defineRules(GenerateRequestSchema, {
      samplesPerPrompt: [max(64)],
      "sampling.topP": [range(0, 1)],
    });
    const msg = create(GenerateRequestSchema, { samplesPerPrompt: 65 });
    expect(failure(() => validate(rules, msg))).toBe("samples_per_prompt: must be at most 64, got 65");
    expect(failure(() => validate(rules, create(GenerateRequestSchema, { sampling: { topP: 2 } })))).toBe(
      "sampling.top_p: must be between 0 and 1, got 2",
    );
    expect(() => validate(rules, create(GenerateRequestSchema))).not.toThrow();
    const outer = defineRules(StartRunRequestSchema, {
      config: [nested(defineRules(RunConfigSchema, { gamma: [max(1)] }))],
    });
    expect(failure(() => validate(outer, create(StartRunRequestSchema, { config: { gamma: 2 } })))).toBe(
      "config.gamma: must be at most 1, got 2",
    );
  });

  it("defineRules - a key that is not a field fails when the rules are defined", () => {
    // @ts-expect-error: the compiler rejects unknown keys too
    expect(() => defineRules(GenerateRequestSchema, { prompt: [nonEmpty()] })).toThrow(
      /"prompt" is not a field path/,
    );
    // @ts-expect-error: a number rule on a string list does not compile
    defineRules(GenerateRequestSchema, { prompts: [range(0, 1)] });
  });
});

describe("validation API rules", () => {
  it("generate - prompts 1..256, non-empty, at most 4096 bytes; temperature in [0, 10]", () => {
    const ok = create(GenerateRequestSchema, {
      prompts: ["hello"],
      samplesPerPrompt: 4,
      sampling: { temperature: 0.7 },
    });
    expect(() => validate(generateRequestRules, ok)).not.toThrow();
    const big = create(GenerateRequestSchema, { prompts: ["a", "b", "c", "x".repeat(4097)] });
    expect(failure(() => validate(generateRequestRules, big))).toBe(
      "prompts[3]: must be at most 4096 bytes of UTF-8, got 4097",
    );
    const many = create(GenerateRequestSchema, { prompts: Array(257).fill("p") });
    expect(failure(() => validate(generateRequestRules, many))).toBe(
      "prompts: must have at most 256 items, got 257",
    );
    const hot = create(GenerateRequestSchema, { prompts: ["p"], sampling: { temperature: 12 } });
    expect(failure(() => validate(generateRequestRules, hot))).toBe(
      "sampling.temperature: must be between 0 and 10, got 12",
    );
  });

  it("logprobs - each sequence has content and token ids below 2^20 (the model checks its own vocabulary)", () => {
    const seq = (s: object) =>
      create(LogprobsRequestSchema, { sequences: [{ prompt: "p", completion: "c" }, s] });
    expect(() =>
      validate(logprobsRequestRules, seq({ promptTokens: [1], completionTokens: [151_935] })),
    ).not.toThrow();
    expect(() => validate(logprobsRequestRules, seq({ prompt: "p" }))).not.toThrow();
    expect(failure(() => validate(logprobsRequestRules, seq({})))).toBe(
      "sequences[1]: must have a prompt or a completion, as text or token ids",
    );
    expect(
      failure(() => validate(logprobsRequestRules, seq({ prompt: "p", completionTokens: [5, 1 << 20] }))),
    ).toBe("sequences[1].completion_tokens[1]: must be a token id below 1048576, got 1048576");
    expect(failure(() => validate(logprobsRequestRules, create(LogprobsRequestSchema)))).toBe(
      "sequences: must have at least 1 item, got 0",
    );
  });

  it("score - 1..1024 items", () => {
    const items = (n: number) =>
      create(scoreRequestRules.schema, { items: Array(n).fill({ prompt: "p", completion: "c" }) });
    expect(() => validate(scoreRequestRules, items(1024))).not.toThrow();
    expect(failure(() => validate(scoreRequestRules, items(1025)))).toBe(
      "items: must have at most 1024 items, got 1025",
    );
  });

  it("startRun - config required and bounded, run id pattern", () => {
    const req = (config: object | undefined, runId = "") => create(StartRunRequestSchema, { config, runId });
    expect(() => validate(startRunRequestRules, req(goodConfig, "run_1-a"))).not.toThrow();
    expect(failure(() => validate(startRunRequestRules, req(undefined)))).toBe("config: is required");
    expect(failure(() => validate(startRunRequestRules, req({ ...goodConfig, learningRate: 0 })))).toBe(
      "config.learning_rate: must be in (0, 1], got 0",
    );
    expect(failure(() => validate(startRunRequestRules, req({ ...goodConfig, baselineDecay: 1 })))).toBe(
      "config.baseline_decay: must be in [0, 1), got 1",
    );
    expect(failure(() => validate(startRunRequestRules, req({ ...goodConfig, klCoef: -1 })))).toBe(
      "config.kl_coef: must be between 0 and 100, got -1",
    );
    expect(
      failure(() => validate(startRunRequestRules, req({ ...goodConfig, checkpointEvery: 100_001 }))),
    ).toBe("config.checkpoint_every: must be between 0 and 100000, got 100001");
    expect(failure(() => validate(startRunRequestRules, req({ ...goodConfig, steps: 0 })))).toBe(
      "config.steps: must be between 1 and 100000, got 0",
    );
    expect(failure(() => validate(startRunRequestRules, req(goodConfig, "a/b")))).toMatch(
      /^run_id: must be letters, digits/,
    );
    expect(failure(() => validate(startRunRequestRules, req(goodConfig, "x".repeat(65))))).toMatch(
      /^run_id: /,
    );
  });

  it("scoreResponse - one finite score per item", () => {
    const res = (rewards: number[], tokenRewards: number[] = []) =>
      create(ScoreResponseSchema, { scores: rewards.map((reward) => ({ reward, tokenRewards })) });
    expect(() => validate(scoreResponseRules(2), res([0.5, -1]))).not.toThrow();
    expect(failure(() => validate(scoreResponseRules(3), res([0.5, -1])))).toBe(
      "scores: must have exactly 3 items, got 2",
    );
    expect(failure(() => validate(scoreResponseRules(2), res([0.5, Number.NaN])))).toBe(
      "scores[1].reward: must be finite, got NaN",
    );
    expect(failure(() => validate(scoreResponseRules(1), res([1], [0, Number.POSITIVE_INFINITY])))).toBe(
      "scores[0].token_rewards[1]: must be finite, got Infinity",
    );
  });

  it("registry - one rule set per request message type, no duplicates", () => {
    const names = REQUEST_RULES.map((r) => r.schema.typeName);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain("rlaif.optimizer.v1.WatchMetricsRequest");
  });
});
