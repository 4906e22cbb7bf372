/**
 * A Hugging Face model's own tokenizer: its `tokenizer.json` encoded by `@huggingface/tokenizers`
 * (the pure-JS port the transformers.js project maintains; it matches the Rust library token for
 * token), behind the common Tokenizer interface, with BOS/EOS/pad from `tokenizer_config.json` and
 * `generation_config.json` when present.
 *
 * Why token bytes are derived here instead of taken from the library's decode(): decode() rewrites
 * text (clean_up_tokenization_spaces joins " ," and " n't", Strip drops a leading space), so its
 * text would not line up with a scorer's per-byte rewards or with stop sequences. Each token
 * string maps to exact bytes under one of two schemes, chosen from the file:
 * - byte-level BPE (GPT-2, Qwen2, SmolLM, Llama-3: a ByteLevel pre-tokenizer or decoder): every
 *   character of a token stands for one byte through GPT-2's `bytes_to_unicode` table;
 * - SentencePiece-style BPE (Llama-2, TinyLlama, Mistral: Metaspace, or `▁` replaced by a space,
 *   with byte fallback): `<0xNN>` is the byte NN, `▁` a space, any other character its UTF-8.
 * Special tokens (BOS, EOS, chat markers) write no bytes, like the byte tokenizer's BOS and EOS.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { Tokenizer as HfLibTokenizer } from "@huggingface/tokenizers";
import { TokenizerError, ValidationError } from "../errors.js";
import { resolveSpecials, type SpecialIds } from "./tokenizer-hf-specials.js";
import { bytesStreamDecoder, type StreamDecoder, type Tokenizer } from "./tokenizer-types.js";

/** How a tokenizer.json's token strings spell bytes (see the module doc). */
export type TokenBytesScheme = "byte-level" | "sentencepiece";

/** The parsed files of a model directory's tokenizer (the configs are optional, as on the Hub). */
export interface HfTokenizerFiles {
  /** tokenizer.json. */
  tokenizer: unknown;
  /** tokenizer_config.json, when the directory has one. */
  tokenizerConfig?: unknown;
  /** generation_config.json, when the directory has one. */
  generationConfig?: unknown;
}

/** Options of {@link hfTokenizer}. */
export interface HfTokenizerOptions {
  /**
   * Rows of the model's embedding, when more than the tokenizer's ids (Qwen2 pads 151,665 ids to
   * 151,936): ids up to it are valid and write no bytes, so a sampled padding id cannot crash a
   * batch. Smaller than the tokenizer's vocabulary is a TokenizerError.
   */
  modelVocabSize?: number;
  /** Where the files came from, for messages and describe(). */
  source?: string;
  /** The model directory they were read from (becomes `Tokenizer.dir`). */
  dir?: string;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** The `type`s of a component and of every member of its Sequence (decoders, pre_tokenizers, …). */
function componentTypes(c: unknown): string[] {
  if (!isObject(c)) return [];
  const members = [c.decoders, c.pretokenizers, c.normalizers].find(Array.isArray) as unknown[] | undefined;
  return [String(c.type), ...(members ?? []).flatMap(componentTypes)];
}

/** Whether a component (or a member of its Sequence) replaces `▁` by a space or vice versa. */
function usesMetaspace(c: unknown): boolean {
  if (!isObject(c)) return false;
  if (c.type === "Metaspace") return true;
  if (c.type === "Replace" || c.type === "Prepend") return JSON.stringify(c).includes("\u2581");
  return [c.decoders, c.pretokenizers, c.normalizers].some((m) => Array.isArray(m) && m.some(usesMetaspace));
}

/**
 * Checks what this module relies on in a tokenizer.json and picks its token-bytes scheme.
 * Throws TokenizerError naming the field that is missing or unsupported.
 */
export function tokenBytesScheme(json: unknown, source = "tokenizer.json"): TokenBytesScheme {
  const fail = (field: string, reason: string): never => {
    throw new TokenizerError(`${source}: ${field} ${reason}`);
  };
  if (!isObject(json)) return fail("(top level)", "must be a JSON object");
  const model = json.model;
  if (!isObject(model)) return fail("model", "is missing");
  if (model.type !== "BPE") {
    fail(
      "model.type",
      `is ${JSON.stringify(model.type)}; only BPE tokenizers are supported (GPT-2, Llama, Qwen)`,
    );
  }
  if (!isObject(model.vocab)) fail("model.vocab", "must be an object of token → id");
  if (model.continuing_subword_prefix || model.end_of_word_suffix) {
    fail(
      model.continuing_subword_prefix ? "model.continuing_subword_prefix" : "model.end_of_word_suffix",
      "is not supported (token strings would not be their bytes)",
    );
  }
  const types = [...componentTypes(json.pre_tokenizer), ...componentTypes(json.decoder)];
  if (types.includes("ByteLevel")) return "byte-level";
  if (usesMetaspace(json.pre_tokenizer) || usesMetaspace(json.decoder) || usesMetaspace(json.normalizer)) {
    return "sentencepiece";
  }
  return fail(
    "decoder",
    `is ${JSON.stringify(types)}: cannot tell how token strings spell bytes (supported: ByteLevel, or Metaspace / "▁" with ByteFallback)`,
  );
}

/** GPT-2's bytes_to_unicode, inverted: the character each byte is written as → the byte. */
function byteLevelDecoder(): Map<string, number> {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const map = new Map<string, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(printable(b) ? b : next++), b);
  return map;
}

const utf8 = new TextEncoder();

/** The bytes of one (non-special) token string under `scheme`; null if it cannot be spelled. */
function spell(token: string, scheme: TokenBytesScheme, byteOf: Map<string, number>): Uint8Array | null {
  if (scheme === "sentencepiece") {
    const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    return fallback
      ? Uint8Array.of(Number.parseInt(fallback[1] as string, 16))
      : utf8.encode(token.replaceAll("\u2581", " "));
  }
  const out = new Uint8Array(token.length);
  let n = 0;
  for (const ch of token) {
    const b = byteOf.get(ch);
    if (b === undefined) return null;
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/** Builds the tokenizer of a model directory from its parsed files (see HfTokenizerFiles). */
export function hfTokenizer(files: HfTokenizerFiles, opts: HfTokenizerOptions = {}): Tokenizer {
  const source = opts.source ?? "tokenizer.json";
  const scheme = tokenBytesScheme(files.tokenizer, source);
  const json = files.tokenizer as Json;
  let lib: HfLibTokenizer;
  try {
    lib = new HfLibTokenizer(json, isObject(files.tokenizerConfig) ? files.tokenizerConfig : {});
  } catch (cause) {
    throw new TokenizerError(`${source}: cannot be loaded: ${(cause as Error).message}`, { cause });
  }
  const added = lib.get_added_tokens_decoder();
  const idOf = new Map<string, number>(lib.get_vocab(true));
  for (const [id, t] of added) idOf.set(t.content, id);
  let tokenVocab = 0; // a loop, not Math.max(...ids): 150k arguments overflow the stack
  for (const id of idOf.values()) tokenVocab = Math.max(tokenVocab, id + 1);
  const vocabSize = opts.modelVocabSize ?? tokenVocab;
  if (vocabSize < tokenVocab) {
    throw new TokenizerError(
      `${source}: has ids up to ${tokenVocab - 1}, more than the model's ${vocabSize} embedding rows`,
    );
  }
  const byteOf = byteLevelDecoder();
  const bytes: Uint8Array[] = new Array<Uint8Array>(vocabSize).fill(new Uint8Array(0));
  for (const [token, id] of idOf) {
    if (added.has(id)) continue;
    const b = spell(token, scheme, byteOf);
    if (b === null) {
      throw new TokenizerError(
        `${source}: model.vocab token ${JSON.stringify(token)} (id ${id}) is not byte-level`,
      );
    }
    bytes[id] = b;
  }
  // a non-special added token is matched in the raw text, so its content is its bytes; a special writes none
  for (const [id, t] of added) if (!t.special) bytes[id] = utf8.encode(t.content);
  const specials: SpecialIds = resolveSpecials(files, (t) => idOf.get(t), vocabSize);
  const tokenBytes = (id: number): Uint8Array => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new ValidationError("id", `token id must be an integer in [0, ${vocabSize}), got ${id}`);
    }
    return bytes[id] as Uint8Array;
  };
  const description = `hf ${scheme} BPE (${source}), vocab ${vocabSize}, bos ${specials.bos ?? "none"}, eos [${specials.eos.join(", ")}]`;
  return {
    vocabSize,
    bos: specials.bos,
    eos: specials.eos,
    pad: specials.pad,
    encode: (text: string) => lib.encode(text, { add_special_tokens: false }).ids,
    tokenBytes,
    streamDecoder: (): StreamDecoder => bytesStreamDecoder(tokenBytes),
    describe: () => description,
    ...(opts.dir === undefined ? {} : { dir: opts.dir }),
  };
}

/** Reads and parses one JSON file of a model directory; undefined when it is absent and optional. */
function readJson(file: string, required: boolean): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    if (!required && (cause as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new TokenizerError(`cannot read ${file}: ${(cause as Error).message}`, { cause });
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new TokenizerError(`${file} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Loads the tokenizer of a Hugging Face model directory: `tokenizer.json` (required) plus
 * `tokenizer_config.json` and `generation_config.json` when present. TokenizerError names the file
 * and field that cannot be used.
 */
export function loadHfTokenizer(
  dir: string,
  opts: Omit<HfTokenizerOptions, "source" | "dir"> = {},
): Tokenizer {
  const tokenizerConfig = readJson(path.join(dir, "tokenizer_config.json"), false);
  const generationConfig = readJson(path.join(dir, "generation_config.json"), false);
  return hfTokenizer(
    {
      tokenizer: readJson(path.join(dir, "tokenizer.json"), true),
      ...(tokenizerConfig === undefined ? {} : { tokenizerConfig }),
      ...(generationConfig === undefined ? {} : { generationConfig }),
    },
    { ...opts, source: path.join(dir, "tokenizer.json"), dir: path.resolve(dir) },
  );
}
