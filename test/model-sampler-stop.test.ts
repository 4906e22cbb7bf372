/**
 * Stop sequences in the sampler: where a row stops (bytes, across token boundaries, multi-byte
 * characters, EOS in between), what is kept (the stop's tokens and log-probs) and what is left out
 * (the text), and that seeded sampling is unchanged by stops that do not match.
 *
 * A scripted model makes the stopping place exact: at each decoding step it puts all the mass on
 * the next byte of its row's script, so every seed samples the script.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import {
  completionText,
  matchStop,
  type SamplingParams,
  stopBytes,
  stopHoldback,
} from "../services/core/src/model/sampling.js";
import { EOS, encode, VOCAB_SIZE } from "../services/core/src/model/tokenizer.js";
import { TransformerLM } from "../services/core/src/model/transformer.js";
import { scripted } from "./helpers/scripted-model.js";

const SAMPLE: SamplingParams = {
  maxNewTokens: 40,
  temperature: 1,
  topK: 0,
  topP: 1,
  seed: 3,
  stopAtEos: false,
};

const bytesOf = (s: string) => [...Buffer.from(s, "utf8")];

describe("sampler stop sequences", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("sampler stop - a row stops at the first place its bytes end with a stop; tokens keep it, the text leaves it out", async () => {
    const script = encode("Hello, world. More text.");
    const [o] = await generate(scripted([script]), [encode("Say:")], { ...SAMPLE, stop: ["."] });
    expect(o?.finishReason).toBe("stop");
    expect(o?.stop).toBe(".");
    expect(o?.tokens).toEqual(encode("Hello, world."));
    expect(o?.logprobs).toHaveLength(o?.tokens.length ?? -1);
    expect(completionText(o as never)).toBe("Hello, world");
    // The same script without a stop runs to maxNewTokens: the stop changed only where it ended.
    const [full] = await generate(scripted([script]), [encode("Say:")], { ...SAMPLE, maxNewTokens: 20 });
    expect(full?.finishReason).toBe("length");
    expect(full?.stop).toBeUndefined();
    expect(full?.tokens.slice(0, o?.tokens.length)).toEqual(o?.tokens);
  });

  it("sampler stop - multi-byte stops match on bytes, not on a shared lead byte", async () => {
    // ï is C3 AF and é is C3 A9: the shared lead byte C3 must not stop the row at ï.
    const script = encode("naïve café — fin");
    const [e] = await generate(scripted([script]), [encode("x")], { ...SAMPLE, stop: ["é"] });
    expect(e?.tokens).toEqual(encode("naïve café"));
    expect(e?.tokens.length).toBe(bytesOf("naïve café").length);
    expect(completionText(e as never)).toBe("naïve caf");
    const [dash] = await generate(scripted([script]), [encode("x")], { ...SAMPLE, stop: ["—"] });
    expect(dash?.tokens).toEqual(encode("naïve café —"));
    expect(completionText(dash as never)).toBe("naïve café ");
  });

  it("sampler stop - a stop spanning several tokens is found across token boundaries, and across an EOS when EOS does not stop", async () => {
    const script = encode("one\ntwo\n\nthree");
    const [o] = await generate(scripted([script]), [encode("x")], { ...SAMPLE, stop: ["\n\n", "END"] });
    expect(o?.stop).toBe("\n\n");
    expect(o?.tokens).toEqual(encode("one\ntwo\n\n"));
    expect(completionText(o as never)).toBe("one\ntwo");
    // EOS carries no bytes: "E", "N", EOS, "D" ends with the bytes "END".
    const withEos = [...encode("THE EN"), EOS, ...encode("D and more")];
    const [e] = await generate(scripted([withEos]), [encode("x")], { ...SAMPLE, stop: ["END"] });
    expect(e?.finishReason).toBe("stop");
    expect(e?.tokens).toEqual([...encode("THE EN"), EOS, ...encode("D")]);
    expect(completionText(e as never)).toBe("THE ");
    // With stopAtEos the EOS ends the row first.
    const [s] = await generate(scripted([withEos]), [encode("x")], {
      ...SAMPLE,
      stop: ["END"],
      stopAtEos: true,
    });
    expect(s?.finishReason).toBe("eos");
    expect(s?.stop).toBeUndefined();
  });

  it("sampler stop - only completion bytes count, the longest simultaneous match is reported, and stop beats length", async () => {
    // The prompt ends with "wor"; the completion "ld." must not complete the stop "world".
    const script = encode("ld. world.");
    const [o] = await generate(scripted([script]), [encode("Hello wor")], { ...SAMPLE, stop: ["world"] });
    expect(o?.tokens).toEqual(encode("ld. world"));
    // "d." and "world." both end at the last byte: the longer one is the stop.
    const [both] = await generate(scripted([encode("Hello, world. More")]), [encode("x")], {
      ...SAMPLE,
      stop: ["d.", "world."],
    });
    expect(both?.stop).toBe("world.");
    expect(completionText(both as never)).toBe("Hello, ");
    // The stop completes on the last allowed token: the reason is "stop", not "length".
    const [edge] = await generate(scripted([encode("abc.def")]), [encode("x")], {
      ...SAMPLE,
      maxNewTokens: 4,
      stop: ["."],
    });
    expect(edge?.finishReason).toBe("stop");
    expect(edge?.tokens).toEqual(encode("abc."));
  });

  it("sampler stop - rows of a batch stop independently", async () => {
    const scripts = [encode("a.bcdefgh"), encode("abcdef.gh"), encode("abcdefgh")];
    const out = await generate(scripted(scripts), [encode("p"), encode("longer prompt"), []], {
      ...SAMPLE,
      maxNewTokens: 8,
      stop: ["."],
    });
    expect(out.map((o) => o.finishReason)).toEqual(["stop", "stop", "length"]);
    expect(out.map((o) => completionText(o))).toEqual(["a", "abcdef", "abcdefgh"]);
  });

  it("sampler stop - stopHoldback holds back what could still start a stop; matchStop finds the longest", () => {
    const stops = stopBytes(["\n\n", "END", "é"]);
    expect(stopHoldback(bytesOf("abc"), stops)).toBe(0);
    expect(stopHoldback(bytesOf("abc\n"), stops)).toBe(1);
    expect(stopHoldback(bytesOf("abcEN"), stops)).toBe(2);
    expect(stopHoldback(bytesOf("abcE"), stops)).toBe(1);
    expect(stopHoldback([...bytesOf("ab"), 0xc3], stops)).toBe(1);
    expect(stopHoldback(bytesOf("ï"), stops)).toBe(0);
    expect(stopHoldback(bytesOf("E"), stopBytes(["EEEX"]))).toBe(1);
    expect(stopHoldback(bytesOf("EEE"), stopBytes(["EEEX"]))).toBe(3);
    expect(matchStop(bytesOf("xEND"), stops)).toBe(1);
    expect(matchStop(bytesOf("xEN"), stops)).toBe(-1);
    expect(matchStop(bytesOf("ab"), stopBytes(["b", "ab", "xab"]))).toBe(1);
  });

  it("sampler stop - empty stop strings are ValidationErrors naming the item", async () => {
    const err = await generate(scripted([[65]]), [[66]], { ...SAMPLE, stop: ["ok", ""] }).catch((e) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect(String(err.message)).toContain("params.stop[1]");
  });

  describe("on a real model", () => {
    let model: TransformerLM;
    const TINY = { vocabSize: VOCAB_SIZE, contextLength: 24, dModel: 16, nLayers: 2, nHeads: 2 };
    const PROMPTS = [encode("The"), encode("A longer prompt"), [], encode("Hi")];
    beforeAll(() => {
      model = new TransformerLM(TINY, 11);
    });
    afterAll(() => model.dispose());

    it("sampler stop - seeded sampling is unchanged: a stop that never matches changes nothing, one that matches cuts the same draws short", async () => {
      const base = { ...SAMPLE, maxNewTokens: 8 };
      const plain = await generate(model, PROMPTS, base);
      const never = await generate(model, PROMPTS, { ...base, stop: ["\u{1F600}never"] });
      expect(never).toEqual(plain);
      // The first ASCII byte a row sampled, as a stop: each row ends there, with the same tokens
      // and log-probs as before up to that point.
      const stop = [
        ...new Set(plain.flatMap((o) => o.tokens.filter((t) => t >= 32 && t < 127).slice(0, 1))),
      ].map((t) => String.fromCharCode(t));
      expect(stop.length).toBeGreaterThan(0);
      const cut = await generate(model, PROMPTS, { ...base, stop });
      const again = await generate(model, PROMPTS, { ...base, stop });
      expect(again).toEqual(cut);
      const stops = stopBytes(stop);
      cut.forEach((o, r) => {
        const p = plain[r] as (typeof plain)[number];
        const end = p.tokens.findIndex(
          (_, j) =>
            matchStop(
              p.tokens.slice(0, j + 1).filter((t) => t < 256),
              stops,
            ) >= 0,
        );
        if (end < 0) {
          expect(o).toEqual(p);
          return;
        }
        expect(o.finishReason).toBe("stop");
        expect(o.tokens).toEqual(p.tokens.slice(0, end + 1));
        expect(o.logprobs).toEqual(p.logprobs.slice(0, end + 1));
      });
      expect(cut.some((o) => o.finishReason === "stop")).toBe(true);
      // The kept stop tokens' log-probs are what a recompute (the learner, the reference) sees.
      const recomputed = sequenceLogprobs(
        model,
        PROMPTS,
        cut.map((o) => o.tokens),
      );
      cut.forEach((o, r) => {
        o.logprobs.forEach((lp, j) => {
          expect(Math.abs(lp - (recomputed[r]?.[j] as number))).toBeLessThan(1e-4);
        });
      });
    });
  });
});
