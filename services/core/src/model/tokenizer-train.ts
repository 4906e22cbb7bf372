/**
 * Trains the sub-word tokenizer of a model this project pre-trains itself: a GPT-2-style
 * byte-level BPE learned from the corpus by Hugging Face's own trainer (npm `tokenizers`, the Rust
 * library's Node binding), written as a standard `tokenizer.json` that `@huggingface/tokenizers`,
 * the Rust library and transformers' `AutoTokenizer` all load.
 *
 * Why a post-processing step: the binding's `train(files)` takes no trainer options, so it always
 * learns ~30,000 tokens and its alphabet holds only the characters the corpus contains. BPE merges
 * are ordered and every merge's parts come before its result, so keeping the first ids and the
 * merges among them is exactly the tokenizer the trainer would have stopped at; the byte-level
 * characters the corpus never used are then appended (any UTF-8 text, an emoji, a stray byte,
 * stays encodable: no unknown token), and `<|endoftext|>` takes the last id as GPT-2's
 * BOS = EOS = padding.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { TokenizerError, ValidationError } from "../errors.js";

/** The special token that separates documents: GPT-2's BOS, EOS and padding at once. */
export const END_OF_TEXT = "<|endoftext|>";

/** The 256 byte-level characters plus the end-of-text token: the smallest vocabulary. */
export const MIN_BPE_VOCAB = 257;

/** What training gives: the files of a model directory's tokenizer. */
export interface TrainedTokenizer {
  /** `tokenizer.json`. */
  tokenizer: Record<string, unknown>;
  /** `tokenizer_config.json`: names the specials so transformers and this project find them. */
  tokenizerConfig: Record<string, unknown>;
  /** The id of END_OF_TEXT (vocabSize − 1). */
  endOfText: number;
}

/** The subset of the `tokenizers` binding this module uses. */
interface Binding {
  Tokenizer: new (
    model: unknown,
  ) => {
    setPreTokenizer(p: unknown): void;
    train(files: string[]): void;
    save(file: string, pretty?: boolean): void;
  };
  BPE: { empty(): unknown };
  byteLevelPreTokenizer(addPrefixSpace?: boolean, useRegex?: boolean): unknown;
  byteLevelAlphabet(): string[];
}

function binding(): Binding {
  try {
    return createRequire(import.meta.url)("tokenizers") as Binding;
  } catch (cause) {
    throw new TokenizerError(
      `training a tokenizer needs the npm package "tokenizers" and its native binary for ${process.platform}-${process.arch}: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/**
 * A byte-level BPE of exactly `vocabSize` ids trained on `lines` (one sentence or document per
 * line): ids 0…K−1 are the trainer's first tokens, then the byte characters the text never used,
 * then END_OF_TEXT. Deterministic for the same lines. ValidationError for a size the trainer cannot
 * reach; TokenizerError when the binding cannot be loaded.
 */
export function trainByteLevelBpe(
  lines: readonly string[],
  vocabSize: number,
  maxLength: number,
): TrainedTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_BPE_VOCAB || vocabSize > 30_000)
    throw new ValidationError("vocabSize", `must be an integer in ${MIN_BPE_VOCAB}..30000, got ${vocabSize}`);
  const lib = binding();
  const work = mkdtempSync(path.join(tmpdir(), "rlaif-bpe-"));
  let full: Record<string, unknown>;
  try {
    const text = path.join(work, "corpus.txt");
    writeFileSync(text, `${lines.join("\n")}\n`);
    const t = new lib.Tokenizer(lib.BPE.empty());
    // GPT-2's pre-tokenizer: its regex splits words, numbers and punctuation, a space joins the word after it
    t.setPreTokenizer(lib.byteLevelPreTokenizer(false, true));
    t.train([text]);
    t.save(path.join(work, "tokenizer.json"));
    full = JSON.parse(readFileSync(path.join(work, "tokenizer.json"), "utf8")) as Record<string, unknown>;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const model = full.model as { vocab: Record<string, number>; merges: ([string, string] | string)[] };
  const byId = Object.entries(model.vocab).sort((a, b) => a[1] - b[1]);
  // the binding lists its alphabet in hash order: sort it, so the same corpus gives the same ids
  const missing = lib
    .byteLevelAlphabet()
    .filter((c) => !(c in model.vocab))
    .sort((a, b) => (a.codePointAt(0) as number) - (b.codePointAt(0) as number));
  const keep = vocabSize - missing.length - 1;
  if (keep > byId.length)
    throw new ValidationError(
      "vocabSize",
      `the corpus gives only ${byId.length + missing.length + 1} tokens`,
    );
  const vocab: Record<string, number> = Object.fromEntries(byId.slice(0, keep));
  const pair = (m: [string, string] | string): [string, string] =>
    Array.isArray(m) ? m : (m.split(" ") as [string, string]);
  // the merges among the kept ids are a prefix of the trainer's list (checked: BPE's order)
  const merges = model.merges.map(pair).filter(([l, r]) => l in vocab && r in vocab && `${l}${r}` in vocab);
  const prefix = model.merges.slice(0, merges.length).map(pair);
  if (prefix.some(([l, r], i) => l !== merges[i]?.[0] || r !== merges[i]?.[1]))
    throw new TokenizerError("the trainer's merges are not in BPE order; cannot truncate them");
  missing.forEach((c, i) => {
    vocab[c] = keep + i;
  });
  const endOfText = vocabSize - 1;
  vocab[END_OF_TEXT] = endOfText;
  const tokenizer = {
    ...full,
    added_tokens: [
      {
        ...{ id: endOfText, content: END_OF_TEXT, single_word: false, lstrip: false, rstrip: false },
        ...{ normalized: false, special: true },
      },
    ],
    normalizer: null,
    // rows start with END_OF_TEXT, as in pre-training, for any library that adds specials
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: END_OF_TEXT, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        ...[{ SpecialToken: { id: END_OF_TEXT, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        ...[{ SpecialToken: { id: END_OF_TEXT, type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      ],
      special_tokens: { [END_OF_TEXT]: { id: END_OF_TEXT, ids: [endOfText], tokens: [END_OF_TEXT] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { ...model, vocab, merges },
  };
  const tokenizerConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: END_OF_TEXT,
    eos_token: END_OF_TEXT,
    unk_token: END_OF_TEXT,
    pad_token: END_OF_TEXT,
    model_max_length: maxLength,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
  };
  return { tokenizer, tokenizerConfig, endOfText };
}
