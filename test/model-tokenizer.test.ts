import { describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import {
  BOS,
  createStreamDecoder,
  decode,
  describeTokenizer,
  EOS,
  encode,
  isByteTokenizer,
  VOCAB_SIZE,
} from "../services/core/src/model/tokenizer.js";

describe("tokenizer", () => {
  it("tokenizer - constants describe 256 bytes plus BOS and EOS", () => {
    expect([BOS, EOS, VOCAB_SIZE]).toEqual([256, 257, 258]);
    expect(describeTokenizer()).toEqual({ kind: "byte", vocabSize: 258, bos: 256, eos: 257 });
    expect(isByteTokenizer(JSON.parse(JSON.stringify(describeTokenizer())))).toBe(true);
    expect(isByteTokenizer({ kind: "byte", vocabSize: 300, bos: 256, eos: 257 })).toBe(false);
  });

  it("tokenizer - encode gives UTF-8 bytes and decode inverts it", () => {
    expect(encode("Hi")).toEqual([72, 105]);
    expect(encode("é")).toEqual([0xc3, 0xa9]);
    for (const text of ["", "The jury said.", "naïve café – 東京 🙂"]) {
      expect(decode(encode(text))).toBe(text);
    }
  });

  it("tokenizer - decode drops specials and replaces invalid UTF-8", () => {
    expect(decode([BOS, 72, 105, EOS])).toBe("Hi");
    expect(decode([0xc3])).toBe("\ufffd");
    expect(decode([0xff, 65])).toBe("\ufffdA");
  });

  it("tokenizer - decode rejects ids outside the vocabulary", () => {
    expect(() => decode([65, 258])).toThrow(ValidationError);
    expect(() => decode([-1])).toThrow(ValidationError);
    expect(() => decode([1.5])).toThrow(ValidationError);
  });

  it("tokenizer - stream decoder holds back partial characters", () => {
    const d = createStreamDecoder();
    const pieces = [BOS, ...encode("a🙂b"), EOS].map((id) => d.push(id));
    expect(pieces.join("") + d.end()).toBe("a🙂b");
    expect(pieces[2]).toBe("");
    const e = createStreamDecoder();
    e.push(0xf0);
    expect(e.end()).toBe("\ufffd");
  });
});
