import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ScoreResponseSchema } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ValidationError } from "../services/core/src/errors.js";
import { byteTokenizer, EOS, encode } from "../services/core/src/model/tokenizer.js";
import { alignTokenRewards, checkScores } from "../services/rollout/collect.js";

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
    expect(() => checkScores(res([0, 1]), ["ok"])).not.toThrow();
    expect(() => checkScores(res([]), ["ok"])).not.toThrow();
    expect(() => checkScores(res([0, 0, 1]), ["é"])).toThrow(ValidationError);
    expect(() => checkScores(res([1]), ["ok"])).toThrow(
      /scores\[0\]\.token_rewards.*1 entries for 2 UTF-8 bytes/,
    );
  });
});
