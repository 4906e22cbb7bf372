import { describe, expect, it } from "vitest";
import { DEFAULT_CHECKPOINT } from "../services/core/src/config/settings.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { loadCheckpoint, modelFromCheckpoint } from "../services/core/src/model/checkpoint.js";
import { generate } from "../services/core/src/model/sampler.js";
import { decode, encode } from "../services/core/src/model/tokenizer.js";

describe("checkpoint(default)", () => {
  it("checkpoint(default) - the committed pretrained policy loads with its documented shape and provenance", async () => {
    const c = await loadCheckpoint(DEFAULT_CHECKPOINT);
    expect(c.kind).toBe("transformer");
    expect(c.config).toEqual({ vocabSize: 258, contextLength: 64, dModel: 128, nLayers: 4, nHeads: 4 });
    expect(c.metadata.producedBy).toBe("rlaif pretrain");
    // A byte-level model that learned nothing sits at 8 bits per byte; the pretrained one far below.
    const bpb = Number(c.metadata.heldOutBpb);
    expect(bpb).toBeGreaterThan(1);
    expect(bpb).toBeLessThan(3.5);
  });

  it("checkpoint(default) - it writes English-shaped text: letters, spaces and punctuation", async () => {
    await initBackend("wasm");
    const model = modelFromCheckpoint(await loadCheckpoint(DEFAULT_CHECKPOINT));
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
