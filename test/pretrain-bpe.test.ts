/**
 * The English default's pipeline: a byte-level BPE trained on the corpus by Hugging Face's own
 * trainer (tokenizer-train.ts), pre-training over its tokens, and `rlaif pretrain --vocab` writing
 * a GPT-2 model directory that this project's loader and an independent PyTorch implementation
 * (test/python/hf_reference.py) both read.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../services/core/src/errors.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { loadCorpusSplit } from "../services/core/src/model/corpus.js";
import { loadHfModel } from "../services/core/src/model/hf-model-dir.js";
import { buildStream, sampleWindows } from "../services/core/src/model/pretrain.js";
import { Rng } from "../services/core/src/model/rng.js";
import { hfTokenizer } from "../services/core/src/model/tokenizer-hf.js";
import { END_OF_TEXT, trainByteLevelBpe } from "../services/core/src/model/tokenizer-train.js";
import { tokensText } from "../services/core/src/model/tokenizer-types.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";

const hasTorch = requireTool(TOOLS.pythonTorch);
const rust = createRequire(import.meta.url)("tokenizers") as {
  Tokenizer: { fromString(s: string): { encode(s: string): Promise<{ getIds(): number[] }> } };
};
const lines = loadCorpusSplit().train.slice(0, 2000);
const trained = trainByteLevelBpe(lines, 600, 64);
const tok = hfTokenizer({ tokenizer: trained.tokenizer, tokenizerConfig: trained.tokenizerConfig });

describe("tokenizer-train", () => {
  it("tokenizer-train - exactly the asked vocabulary, <|endoftext|> last as BOS = EOS, the same ids again", () => {
    const vocab = (trained.tokenizer.model as { vocab: Record<string, number> }).vocab;
    expect(Object.keys(vocab)).toHaveLength(600);
    expect(new Set(Object.values(vocab)).size).toBe(600);
    expect(Math.max(...Object.values(vocab))).toBe(599);
    expect(trained.endOfText).toBe(599);
    expect(vocab[END_OF_TEXT]).toBe(599);
    expect([tok.vocabSize, tok.bos, tok.eos]).toEqual([600, 599, [599]]);
    expect(JSON.stringify(trainByteLevelBpe(lines, 600, 64))).toBe(JSON.stringify(trained));
  });

  it("tokenizer-train - any text round-trips (bytes the corpus never had included), ids as the Rust library gives them", async () => {
    const texts = ["The jury said it would not.", "naïve café — “quotes” 😀 日本語 \u0001\t\n", "don't  x2"];
    const lib = rust.Tokenizer.fromString(JSON.stringify(trained.tokenizer));
    for (const text of texts) {
      const ids = tok.encode(text);
      expect(tokensText(tok, ids)).toBe(text);
      expect((await lib.encode(text)).getIds().slice(1)).toEqual(ids); // the Rust side adds its BOS
    }
    // merges learned: common words are one token each
    expect(tok.encode(" the")).toHaveLength(1);
  });

  it("tokenizer-train - refuses a size outside 257..30000, naming it", () => {
    expect(() => trainByteLevelBpe(lines, 100, 64)).toThrow(ValidationError);
    expect(() => trainByteLevelBpe(lines, 100, 64)).toThrow(/vocabSize/);
  });
});

describe("pretrain(bpe)", () => {
  it("pretrain(bpe) - one <|endoftext|> between sentences, and every target is scored", () => {
    const stream = buildStream(["The man.", "It was."], tok);
    const e = tok.eos[0] as number;
    expect([...stream.tokens]).toEqual([e, ...tok.encode("The man."), e, ...tok.encode("It was."), e]);
    expect([...stream.starts]).toEqual([0, 1 + tok.encode("The man.").length]);
    expect(stream.unscored).toBeNull();
    const w = sampleWindows(buildStream(lines.slice(0, 40), tok), 8, 16, new Rng(1), 0.5);
    expect(w.mask.every((m) => m === 1)).toBe(true);
    expect(w.y.some((id) => id === e)).toBe(true);
  });
});

describe("rlaif pretrain --vocab", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("rlaif pretrain --vocab - writes a GPT-2 directory that loads with its tokenizer, PyTorch reads it to the same logits, and --from continues it", async () => {
    const out = path.join(mkdtempSync(path.join(tmpdir(), "rlaif-bpe-")), "model");
    const args = [
      "pretrain",
      "--vocab",
      "300",
      "--out",
      out,
      "--steps",
      "2",
      "--batch",
      "2",
      "--context",
      "16",
    ];
    const tiny = ["--d-model", "16", "--layers", "1", "--heads", "2", "--samples", "1", "--backend", "wasm"];
    const r = spawnSync(process.execPath, [RLAIF_BIN, ...args, ...tiny], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/perplexity \d/);
    expect(r.stderr).toMatch(/sample 0: /);
    expect(readdirSync(out).sort()).toEqual([
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "pretrain.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const { model, config } = await loadHfModel(out);
    expect(config).toMatchObject({ kind: "hf-gpt2", vocabSize: 300, contextLength: 16, bosTokenId: 299 });
    expect(model.tokenizer?.bos).toBe(299);
    const rows = [[299, ...(model.tokenizer?.encode("The man said") ?? [])]];
    const ours = tf.tidy(() =>
      model.forward(tf.tensor2d(rows, [1, rows[0]?.length ?? 0], "int32")).dataSync(),
    );
    if (hasTorch) {
      const py = path.join(import.meta.dirname, "python", "hf_reference.py");
      const ref = JSON.parse(execFileSync(PYTHON, [py, out, JSON.stringify(rows)], { encoding: "utf8" }))
        .logits as number[];
      const scale = Math.max(...ref.map(Math.abs));
      expect(Math.max(...ref.map((x, i) => Math.abs(x - (ours[i] as number)))) / scale).toBeLessThan(1e-5);
    }
    model.dispose();
    // --from continues it: same shape and tokenizer, the first stage's record kept
    const more = `${out}-more`;
    const again = [
      "pretrain",
      "--from",
      out,
      "--out",
      more,
      "--steps",
      "1",
      "--batch",
      "2",
      "--samples",
      "0",
    ];
    const r2 = spawnSync(process.execPath, [RLAIF_BIN, ...again, "--backend", "wasm"], { encoding: "utf8" });
    expect(r2.status, r2.stderr).toBe(0);
    expect(readFileSync(path.join(more, "tokenizer.json"), "utf8")).toBe(
      readFileSync(path.join(out, "tokenizer.json"), "utf8"),
    );
    const record = JSON.parse(readFileSync(path.join(more, "pretrain.json"), "utf8"));
    expect([record.step, record.continuedFrom.step]).toEqual(["1", "2"]);
  });

  it("rlaif pretrain --vocab - refuses a .safetensors --out and a non-Transformer model with exit 2", () => {
    const run = (extra: string[]) =>
      spawnSync(process.execPath, [RLAIF_BIN, "pretrain", "--vocab", "300", ...extra], { encoding: "utf8" });
    const file = run(["--out", path.join(tmpdir(), "x.safetensors")]);
    expect([file.status, file.stderr]).toEqual([2, expect.stringMatching(/--out must name a directory/)]);
    const gru = run(["--out", path.join(tmpdir(), "x"), "--model", "gru"]);
    expect([gru.status, gru.stderr]).toEqual([
      2,
      expect.stringMatching(/--vocab .* --model transformer only/),
    ]);
  });
});
