/**
 * The committed policies: the default (a GPT-2 with its own BPE, a Hugging Face directory) writes
 * English — at least 90% of the words of its held-out samples are in Debian's wamerican list,
 * both sampled as every checkpoint's README shows samples (temperature 0.8, top-p 0.95) and as RL
 * samples (temperature 1, no truncation; see checkpoints/default/README.md) — and the byte-level
 * Transformer kept beside it still loads with its documented shape.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CHECKPOINT, REPO_ROOT } from "../services/core/src/config/settings.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { loadCheckpoint, modelFromCheckpoint } from "../services/core/src/model/checkpoint.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { dictionaryWordShare, loadWordList } from "../services/core/src/model/dictionary-words.js";
import { loadHfModel } from "../services/core/src/model/hf-model-dir.js";
import { generate } from "../services/core/src/model/sampler.js";
import { decode, encode } from "../services/core/src/model/tokenizer.js";
import { tokensText } from "../services/core/src/model/tokenizer-types.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const BYTE_TRANSFORMER = path.join(REPO_ROOT, "checkpoints", "transformer", "model.safetensors");
const hasWords = requireTool(TOOLS.wamerican);

describe("checkpoint(default)", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("checkpoint(default) - a GPT-2 directory with its own 4096-id BPE, pre-trained by rlaif pretrain", async () => {
    const { model, config } = await loadHfModel(DEFAULT_CHECKPOINT);
    expect(config).toMatchObject({ kind: "hf-gpt2", vocabSize: 4096, bosTokenId: 4095, eosTokenIds: [4095] });
    expect(model.tokenizer?.describe()).toMatch(/byte-level BPE/);
    const made = JSON.parse(readFileSync(path.join(DEFAULT_CHECKPOINT, "pretrain.json"), "utf8"));
    expect(made.producedBy).toBe("rlaif pretrain");
    // Uniform guessing over 4096 ids is 4096; the pre-trained model is far below, and below the
    // byte-level Transformer's 2.74 bits per byte of text.
    expect(Number(made.heldOutPerplexity)).toBeLessThan(100);
    expect(Number(made.heldOutBpb)).toBeLessThan(2);
    model.dispose();
  });

  it.skipIf(!hasWords)(
    "checkpoint(default) - at least 90% of the words it writes on held-out prompts are dictionary words, at the samples' temperature 0.8 and at RL's temperature 1",
    async () => {
      const { model } = await loadHfModel(DEFAULT_CHECKPOINT);
      const tok = model.tokenizer;
      if (!tok) throw new Error("the default carries its tokenizer");
      // 64 held-out prompts × 4 samples, as the learning benchmark samples them
      const prompts = heldOutPrompts(64, 1);
      const list = loadWordList();
      for (const [temperature, topP] of [
        [0.8, 0.95],
        [1, 1],
      ] as const) {
        const outs = await generate(
          model,
          prompts.flatMap((p) => Array.from({ length: 4 }, () => tok.encode(p))),
          { maxNewTokens: 24, temperature, topK: 0, topP, seed: 1, stopAtEos: true },
        );
        const share = dictionaryWordShare(
          outs.map((o) => tokensText(tok, o.tokens)),
          list,
        );
        const at = `temperature ${temperature}, top-p ${topP}`;
        expect(share.words, at).toBeGreaterThan(2500);
        expect(share.share, `${at}: unknown words: ${share.unknown.join(", ")}`).toBeGreaterThanOrEqual(0.9);
      }
      model.dispose();
    },
  );
});

describe("checkpoint(transformer)", () => {
  it("checkpoint(transformer) - the byte-level Transformer loads with its documented shape and provenance", async () => {
    const c = await loadCheckpoint(BYTE_TRANSFORMER);
    expect(c.kind).toBe("transformer");
    expect(c.config).toEqual({ vocabSize: 258, contextLength: 64, dModel: 128, nLayers: 4, nHeads: 4 });
    expect(c.metadata.producedBy).toBe("rlaif pretrain");
    // A byte-level model that learned nothing sits at 8 bits per byte; the pretrained one far below.
    const bpb = Number(c.metadata.heldOutBpb);
    expect(bpb).toBeGreaterThan(1);
    expect(bpb).toBeLessThan(3.5);
  });

  it("checkpoint(transformer) - it writes English-shaped text: letters, spaces and punctuation", async () => {
    await initBackend("wasm");
    const model = modelFromCheckpoint(await loadCheckpoint(BYTE_TRANSFORMER));
    const outs = await generate(model, ["The man", "It was", "She said"].map(encode), {
      maxNewTokens: 40,
      temperature: 0.8,
      topK: 0,
      topP: 0.95,
      seed: 1,
      stopAtEos: false,
    });
    const text = outs.map((o) => decode(o.tokens)).join(" ");
    const plain = text.match(/[A-Za-z ,.'"!?;:-]/g)?.length ?? 0;
    expect(plain / text.length).toBeGreaterThan(0.9);
    // Words, not one long run: spaces separate tokens of plausible length.
    const words = text.split(/\s+/).filter(Boolean);
    const meanLength = words.reduce((n, w) => n + w.length, 0) / words.length;
    expect(meanLength).toBeGreaterThan(2);
    expect(meanLength).toBeLessThan(9);
    model.dispose();
  });
});
