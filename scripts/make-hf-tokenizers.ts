/**
 * Writes tiny tokenizer files into the Hugging Face test fixtures (test/fixtures/hf/{gpt2,qwen2,
 * llama}), so `--model` runs end to end on them: the fixtures' 61-row embeddings are far smaller
 * than any real vocabulary. Each file has the real layout of its family: GPT-2 and Qwen2 a
 * byte-level BPE with `<|endoftext|>` at id 0 (GPT-2 adds no BOS; Qwen2's tokenizer_config names
 * that token its EOS, as Qwen's does), Llama a SentencePiece-style BPE (`▁` for spaces, `<unk>`
 * 0, `<s>` 1 added as BOS, `</s>` 2). Characters outside a vocabulary are dropped (byte-level) or
 * become `<unk>` (SentencePiece-style), so prompts in tests are lowercase.
 *
 *   npx tsx scripts/make-hf-tokenizers.ts
 */
import { writeFileSync } from "node:fs";
import path from "node:path";

const VOCAB = 61;
const FIXTURES = path.join(import.meta.dirname, "..", "test", "fixtures", "hf");
const LETTERS = [..."abcdefghijklmnopqrstuvwxyz.,!?'"];
const PAIRS = ["_ t", "h e", "_t he", "_ a", "i n", "e r", "o n", "_ s", "e n", "a n", "_ w", "r e", "o r"];
const MORE = ["_ o", "a t", "e s", "_ i", "_ b", "_ f", "_ m", "i s", "l l", "o u", "_ g", "_ h", "_ c", "n d"];

/** Vocabulary and merges: `specials` first, then `space` + letters, then merges up to VOCAB ids. */
function bpe(specials: string[], space: string, extra: string[]): { vocab: Record<string, number>; merges: string[] } {
  const vocab: Record<string, number> = {};
  for (const t of [...specials, space, ...extra, ...LETTERS]) vocab[t] = Object.keys(vocab).length;
  const merges: string[] = [];
  for (const pair of [...PAIRS, ...MORE]) {
    if (Object.keys(vocab).length >= VOCAB) break;
    const [a, b] = pair.replaceAll("_", space).split(" ") as [string, string];
    merges.push(`${a} ${b}`);
    vocab[a + b] = Object.keys(vocab).length;
  }
  return { vocab, merges };
}

function added(content: string, id: number) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function byteLevel() {
  const { vocab, merges } = bpe(["<|endoftext|>"], "Ġ", ["Ċ"]);
  const level = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [added("<|endoftext|>", 0)],
    normalizer: null,
    pre_tokenizer: level,
    post_processor: level,
    decoder: level,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

function sentencePiece() {
  const { vocab, merges } = bpe(["<unk>", "<s>", "</s>"], "▁", []);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [added("<unk>", 0), added("<s>", 1), added("</s>", 2)],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

const write = (dir: string, name: string, json: unknown) =>
  writeFileSync(path.join(FIXTURES, dir, name), `${JSON.stringify(json, null, 2)}\n`);

write("gpt2", "tokenizer.json", byteLevel());
write("gpt2", "tokenizer_config.json", { tokenizer_class: "GPT2Tokenizer", bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>", add_bos_token: false, model_max_length: 16 });
write("qwen2", "tokenizer.json", byteLevel());
write("qwen2", "tokenizer_config.json", { tokenizer_class: "Qwen2Tokenizer", bos_token: null, eos_token: "<|endoftext|>", pad_token: "<|endoftext|>", add_bos_token: false, model_max_length: 32 });
write("llama", "tokenizer.json", sentencePiece());
write("llama", "tokenizer_config.json", { tokenizer_class: "LlamaTokenizer", bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, add_eos_token: false, model_max_length: 32 });
