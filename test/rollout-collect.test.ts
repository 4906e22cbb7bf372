import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ScoreResponseSchema } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ValidationError } from "../services/core/src/errors.js";
import { byteTokenizer, EOS, encode } from "../services/core/src/model/tokenizer.js";
import { hfTokenizer } from "../services/core/src/model/tokenizer-hf.js";
import { alignTokenRewards, checkScores } from "../services/rollout/collect.js";
import { gpt2TokenizerJson } from "./helpers/gpt2-tokenizer.js";

/** Each token's bytes under the byte tokenizer (what the Policy reports as token_bytes). */
const bytesOf = (ids: number[]) => ids.map((id) => byteTokenizer.tokenBytes(id));

describe("rollout collect", () => {
  it("rollout collect - per-byte rewards map onto the byte tokens; a trailing stop sequence or EOS gets 0", () => {
    const text = "é ok"; // 2 + 1 + 2 bytes
    const bytes = [0, 0, 0, 0, 0.5];
    expect(alignTokenRewards(bytesOf(encode(text)), text, bytes)).toEqual(bytes);
    expect(alignTokenRewards(bytesOf([...encode(text), EOS]), text, bytes)).toEqual([...bytes, 0]);
    // a stop sequence ("\n\n") is in the tokens but not in the text: its tokens get 0 too
    expect(alignTokenRewards(bytesOf([...encode(`${text}\n\n`)]), text, bytes)).toEqual([...bytes, 0, 0]);
  });

  it("rollout collect - per-byte rewards sum per BPE token; a character split across tokens credits each its own bytes", () => {
    const gpt2 = hfTokenizer({ tokenizer: gpt2TokenizerJson() });
    const text = "naïve café 😀"; // GPT-2: "na" "Ã¯ve" "ĠcafÃ©" "ĠðŁĺ" "Ģ": 2 + 4 + 6 + 4 + 1 bytes
    const ids = gpt2.encode(text);
    const tb = ids.map((id) => gpt2.tokenBytes(id));
    expect(tb.map((b) => b.length)).toEqual([2, 4, 6, 4, 1]);
    // byte k earns 2^k, so each token's sum says exactly which bytes it got
    const rewards = Array.from({ length: 17 }, (_, k) => 2 ** k);
    const sums = [0b11, 0b111100, 0b111111000000, 0b1111000000000000, 0b10000000000000000];
    expect(alignTokenRewards(tb, text, rewards)).toEqual(sums);
    // the emoji's 4 bytes: 3 in "ĠðŁĺ" (with the space), 1 in "Ģ"; a token after the text, EOS, earns 0
    expect(alignTokenRewards([...tb, gpt2.tokenBytes(50256)], text, rewards)).toEqual([...sums, 0]);
    // a stop sequence that begins inside a token: the token keeps only its bytes before the stop
    const cut = "naïve caf"; // text before the stop "é 😀"
    expect(alignTokenRewards(tb, cut, rewards.slice(0, 10))).toEqual([0b11, 0b111100, 0b1111000000, 0, 0]);
    expect(alignTokenRewards(tb, "naïve cafe", rewards.slice(0, 11))).toEqual([]); // not these bytes
  });

  it("rollout collect - per-byte rewards fall back to the scalar when the text is not the sampled bytes", () => {
    // 0xff is invalid UTF-8: the text the scorer saw is "a\uFFFD" (4 bytes) for 2 tokens
    const text = "a\uFFFD";
    expect(alignTokenRewards(bytesOf([97, 0xff]), text, [0, 0, 0, 1])).toEqual([]);
    expect(alignTokenRewards(bytesOf([98, 97]), "a", [1])).toEqual([]);
    expect(alignTokenRewards(bytesOf([97]), "a", [])).toEqual([]);
  });

  it("rollout collect - checkScores wants one per-token reward per UTF-8 byte of the text it sent", () => {
    const res = (tokenRewards: number[]) =>
      create(ScoreResponseSchema, { scores: [{ reward: 1, tokenRewards }] });
    const sent = (completion: string) => [{ completion, idempotencyKey: "" }];
    expect(() => checkScores(res([0, 1]), sent("ok"))).not.toThrow();
    expect(() => checkScores(res([]), sent("ok"))).not.toThrow();
    expect(() => checkScores(res([0, 0, 1]), sent("é"))).toThrow(ValidationError);
    expect(() => checkScores(res([1]), sent("ok"))).toThrow(
      /scores\[0\]\.token_rewards.*1 entries for 2 UTF-8 bytes/,
    );
  });
});
