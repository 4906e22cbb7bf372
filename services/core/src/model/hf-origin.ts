/**
 * Where a Hugging Face model came from, carried by the model and its checkpoints: the directory
 * it was loaded from (its tokenizer files live there) and each tensor's dtype on disk. Why keep
 * it: a run's checkpoints hold float32 weights only, and `rlaif export` must write the tensors back
 * under the same names with the dtype the user brought (bf16 stays bf16) and copy the tokenizer.
 */
import path from "node:path";
import { CheckpointError } from "../errors.js";
import type { FloatDtype } from "./safetensors.js";
import { byteTokenizer } from "./tokenizer.js";
import { loadHfTokenizer } from "./tokenizer-hf.js";
import type { Tokenizer } from "./tokenizer-types.js";

/** A Hugging Face model's source directory (absolute) and its tensors' dtypes by file name. */
export interface HfOrigin {
  dir: string;
  dtypes: Record<string, FloatDtype>;
}

/** What a checkpoint records about a Hugging Face tokenizer: its directory and special ids. */
export interface HfTokenizerDescription {
  kind: "hf";
  dir: string;
  vocabSize: number;
  bos: number | null;
  eos: number[];
}

/** The description of a directory-loaded tokenizer (CheckpointError when it has no directory). */
export function describeHfTokenizer(tok: Tokenizer): HfTokenizerDescription {
  if (tok.dir === undefined)
    throw new CheckpointError("this tokenizer was not loaded from a model directory; it cannot be recorded");
  return { kind: "hf", dir: tok.dir, vocabSize: tok.vocabSize, bos: tok.bos, eos: [...tok.eos] };
}

/** True when `d` (parsed from a checkpoint) is a well-formed Hugging Face tokenizer description. */
export function isHfTokenizerDescription(d: unknown): d is HfTokenizerDescription {
  if (typeof d !== "object" || d === null) return false;
  const t = d as Record<string, unknown>;
  return (
    t.kind === "hf" &&
    typeof t.dir === "string" &&
    Number.isInteger(t.vocabSize) &&
    (t.bos === null || Number.isInteger(t.bos)) &&
    Array.isArray(t.eos) &&
    t.eos.every(Number.isInteger)
  );
}

const loaded = new Map<string, Tokenizer>();

/**
 * The tokenizer a checkpoint describes, read again from its directory (cached: a replica rebuilds
 * its model from every published version). CheckpointError when the directory's tokenizer is gone
 * or no longer has the recorded vocabulary and special ids.
 */
export function tokenizerFromDescription(d: HfTokenizerDescription): Tokenizer {
  const key = `${d.dir}\n${d.vocabSize}`;
  let tok = loaded.get(key);
  if (tok === undefined) {
    try {
      tok = loadHfTokenizer(d.dir, { modelVocabSize: d.vocabSize });
    } catch (cause) {
      throw new CheckpointError(
        `the checkpoint's tokenizer comes from ${path.join(d.dir, "tokenizer.json")}: ${(cause as Error).message}`,
        { cause },
      );
    }
    loaded.set(key, tok);
  }
  if (tok.bos !== d.bos || tok.eos.join() !== d.eos.join())
    throw new CheckpointError(
      `${d.dir}: tokenizer has bos ${tok.bos} eos [${tok.eos}], the checkpoint was trained with bos ${d.bos} eos [${d.eos}]`,
    );
  return tok;
}

/**
 * The tokenizer of a description as a checkpoint or a learner thread reports it: the byte
 * tokenizer's, or a Hugging Face directory's (see tokenizerFromDescription). Lets a caller that
 * holds no model (the run controller checking prompts) count the model's tokens.
 */
export function tokenizerOfDescription(d: { kind: "byte" } | HfTokenizerDescription): Tokenizer {
  return d.kind === "hf" ? tokenizerFromDescription(d) : byteTokenizer;
}
