import { describe, expect, it } from "vitest";
import {
  corpusText,
  detokenize,
  heldOutPrompts,
  loadCorpusSplit,
  parseBrownFile,
} from "../services/core/src/model/corpus.js";

describe("corpus", () => {
  it("corpus - strips POS tags and joins tokens into natural text", () => {
    const line =
      "\t``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` was/bedz (/( 1-1/2/cd )/) ok/jj ''/'' ./.\n";
    expect(parseBrownFile(`\n\n${line}\n\n`)).toEqual(['"Only a handful", the jury said, "was (1-1/2) ok".']);
    expect(detokenize(["a", "'", "pro", "'", "letter", ":", "Jr.", "."])).toBe("a 'pro' letter: Jr.");
  });

  it("corpus - the document split is deterministic and disjoint", () => {
    const a = loadCorpusSplit();
    const b = loadCorpusSplit();
    expect(a.trainDocs.length).toBe(450);
    expect(a.heldOutDocs.length).toBe(50);
    expect(a.heldOutDocs.slice(0, 2)).toEqual(["ca10", "ca20"]);
    expect(new Set([...a.trainDocs, ...a.heldOutDocs]).size).toBe(500);
    expect(b.heldOut).toEqual(a.heldOut);
    expect(a.train.length).toBeGreaterThan(40000);
    expect(a.train[0]).toMatch(/^The Fulton County Grand Jury said Friday/);
    expect(a.train.some((s) => /\/[a-z]/.test(s.split(" ")[0] ?? ""))).toBe(false);
    const text = corpusText("heldOut");
    expect(text.split("\n").length).toBe(a.heldOut.length + 1);
    expect(Buffer.byteLength(text)).toBeGreaterThan(500_000);
  });

  it("corpus - held-out prompts are short sentence beginnings, seeded", () => {
    const p = heldOutPrompts(50, 7);
    expect(heldOutPrompts(50, 7)).toEqual(p);
    expect(heldOutPrompts(50, 8)).not.toEqual(p);
    expect(new Set(p).size).toBe(50);
    const held = loadCorpusSplit().heldOut;
    for (const prompt of p) {
      expect(Buffer.byteLength(prompt)).toBeLessThanOrEqual(24);
      expect(prompt.split(" ").length).toBeGreaterThanOrEqual(2);
      expect(held.some((s) => s.startsWith(`${prompt} `))).toBe(true);
    }
  });
});
