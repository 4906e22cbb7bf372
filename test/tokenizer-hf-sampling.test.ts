/**
 * Sampling, stop sequences and the learner's batch with a sub-word tokenizer (GPT-2's real BPE):
 * the model's tokenizer decides where rows start (no BOS for GPT-2), which ids end them (a list of
 * EOS ids), and the bytes stop sequences are matched on, including a stop that ends inside a token.
 * A scripted model makes every stopping place exact (test/helpers/scripted-model.ts).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import { buildPgBatch, disposePgBatch } from "../services/core/src/learn/pg-batch.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { generate } from "../services/core/src/model/sampler.js";
import { completionText, type SamplingParams } from "../services/core/src/model/sampling.js";
import { hfTokenizer } from "../services/core/src/model/tokenizer-hf.js";
import { gpt2TokenizerJson } from "./helpers/gpt2-tokenizer.js";
import { scripted } from "./helpers/scripted-model.js";

// "." (13) as a second EOS id, as an instruct model lists several
const gpt2 = hfTokenizer({ tokenizer: gpt2TokenizerJson(), generationConfig: { eos_token_id: [50256, 13] } });
const SAMPLE: SamplingParams = {
  maxNewTokens: 20,
  temperature: 1,
  topK: 0,
  topP: 1,
  seed: 1,
  stopAtEos: false,
};
const SCRIPT = gpt2.encode(" Hello, world. More text here");
const run = async (p: Partial<SamplingParams>, script = SCRIPT) => {
  const [r] = await generate(scripted([script], 64, gpt2), [gpt2.encode("Say:")], { ...SAMPLE, ...p });
  if (!r) throw new Error("no result");
  return r;
};

describe("tokenizer hf sampling", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("tokenizer hf sampling - the script is GPT-2 tokens, one word each", () => {
    expect(SCRIPT.map((id) => new TextDecoder().decode(gpt2.tokenBytes(id)))).toEqual([
      " Hello",
      ",",
      " world",
      ".",
      " More",
      " text",
      " here",
    ]);
  });

  it("tokenizer hf sampling - a stop sequence spanning tokens and ending inside one stops the row there", async () => {
    const mid = await run({ stop: ["d. M"] }); // ends inside " More"
    expect(mid.finishReason).toBe("stop");
    expect(mid.stop).toBe("d. M");
    expect(mid.tokens).toEqual(SCRIPT.slice(0, 5)); // the stop's tokens stay, " More" included
    expect(mid.logprobs).toHaveLength(5);
    expect(completionText(mid, gpt2)).toBe(" Hello, worl"); // the text ends where the stop begins
    const whole = await run({ stop: ["world"] });
    expect([whole.tokens.length, completionText(whole, gpt2)]).toEqual([3, " Hello, "]);
    // two stops complete in different tokens: the one that ends first wins
    const first = await run({ stop: ["o, w", "llo"] });
    expect([first.stop, first.tokens.length, completionText(first, gpt2)]).toEqual(["llo", 1, " He"]);
    const never = await run({ stop: ["xyz"], maxNewTokens: SCRIPT.length });
    expect([never.finishReason, completionText(never, gpt2)]).toEqual([
      "length",
      " Hello, world. More text here",
    ]);
  });

  it("tokenizer hf sampling - any of the model's EOS ids ends a row; GPT-2 rows start without BOS", async () => {
    const eos = await run({ stopAtEos: true });
    expect(eos.finishReason).toBe("eos");
    expect(eos.tokens).toEqual(SCRIPT.slice(0, 4)); // stopped at "." (13), the second EOS id
    const special = await run({ stopAtEos: true }, [...gpt2.encode(" Hi"), 50256, 11]);
    expect([special.finishReason, completionText(special, gpt2)]).toEqual(["eos", " Hi"]);
    // without BOS an empty prompt leaves nothing to predict the first token from
    await expect(generate(scripted([SCRIPT], 64, gpt2), [[]], SAMPLE)).rejects.toThrow(
      /prompts\[0\]: must not be empty: the model has no BOS/,
    );
  });

  it("tokenizer hf sampling - the learner's batch rows start with the prompt when the model has no BOS", () => {
    const opts = { bosId: null, padId: 50256, vocabSize: gpt2.vocabSize, gamma: 1, baseline: 0 };
    const built = buildPgBatch(
      [{ promptTokens: [10, 11], completionTokens: [12, 13], reward: 1, refLogprobs: [-1, -2] }],
      opts,
    );
    expect(built.tokens.arraySync()).toEqual([[10, 11, 12]]);
    expect(built.batch.actions.arraySync()).toEqual([[11, 12, 13]]);
    expect(built.batch.mask.arraySync()).toEqual([[0, 1, 1]]);
    expect(built.sourceLengths).toEqual([2]);
    disposePgBatch(built);
    expect(() =>
      buildPgBatch([{ promptTokens: [], completionTokens: [12], reward: 1, refLogprobs: [-1] }], opts),
    ).toThrow(ValidationError);
  });
});
