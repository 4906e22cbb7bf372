/**
 * Byte-level tokenizer: token ids 0..255 are UTF-8 bytes, plus two specials.
 *
 * Bytes need no trained vocabulary, never produce out-of-vocabulary text and make log-probs
 * comparable across any model that uses them (byte-level is the default). The two
 * specials mark sequence boundaries: BOS starts every row the model sees, EOS is the action
 * "stop" that a policy can take.
 */
import { ValidationError } from "../errors.js";
import type { CausalLM } from "./causal-lm.js";
import { bytesStreamDecoder, type StreamDecoder, type Tokenizer } from "./tokenizer-types.js";

export type { StreamDecoder } from "./tokenizer-types.js";

/** Beginning of sequence: the first token of every prompt row. */
export const BOS = 256;
/** End of sequence: generation stops when the policy samples it (if asked to). */
export const EOS = 257;
/** Number of token ids: 256 bytes + BOS + EOS. */
export const VOCAB_SIZE = 258;

/** What a checkpoint records about its tokenizer, so a loader can refuse a mismatch. */
export interface TokenizerDescription {
  kind: "byte";
  vocabSize: number;
  bos: number;
  eos: number;
}

/** The description of this tokenizer (stored in checkpoint metadata as JSON). */
export function describeTokenizer(): TokenizerDescription {
  return { kind: "byte", vocabSize: VOCAB_SIZE, bos: BOS, eos: EOS };
}

/** True when `d` (e.g. parsed from a checkpoint) describes this exact tokenizer. */
export function isByteTokenizer(d: unknown): d is TokenizerDescription {
  if (typeof d !== "object" || d === null) return false;
  const t = d as Record<string, unknown>;
  return t.kind === "byte" && t.vocabSize === VOCAB_SIZE && t.bos === BOS && t.eos === EOS;
}

const encoder = new TextEncoder();

/** UTF-8 bytes of `text` as token ids (no specials added: callers decide where BOS goes). */
export function encode(text: string): number[] {
  return Array.from(encoder.encode(text));
}

function checkId(id: number, i: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= VOCAB_SIZE) {
    throw new ValidationError(`ids[${i}]`, `token id must be an integer in [0, ${VOCAB_SIZE}), got ${id}`);
  }
}

/**
 * Text of a token sequence. Specials are dropped; byte sequences that are not valid UTF-8 (a
 * sampled policy can emit any byte) become U+FFFD instead of throwing. Throws ValidationError for
 * ids outside the vocabulary.
 */
export function decode(ids: readonly number[]): string {
  const bytes: number[] = [];
  ids.forEach((id, i) => {
    checkId(id, i);
    if (id < 256) bytes.push(id);
  });
  return new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(bytes));
}

/** Creates a StreamDecoder, e.g. for server-streaming generation that sends text per token. */
export function createStreamDecoder(): StreamDecoder {
  let index = 0;
  return bytesStreamDecoder((id) => {
    checkId(id, index++);
    return BYTES[id] as Uint8Array;
  });
}

/** Each id's bytes, made once: ids 0–255 are one byte, BOS and EOS none. */
const BYTES: readonly Uint8Array[] = Array.from({ length: VOCAB_SIZE }, (_, id) =>
  id < 256 ? Uint8Array.of(id) : new Uint8Array(0),
);

/**
 * The byte tokenizer behind the common interface: what every model this project builds itself
 * (and every checkpoint it has written) reads. EOS doubles as the padding id: padded positions
 * are masked, and EOS is never an input the model must see before a real token.
 */
export const byteTokenizer: Tokenizer = {
  vocabSize: VOCAB_SIZE,
  bos: BOS,
  eos: [EOS],
  pad: EOS,
  encode,
  tokenBytes(id: number): Uint8Array {
    checkId(id, 0);
    return BYTES[id] as Uint8Array;
  },
  streamDecoder: createStreamDecoder,
  describe: () => "byte-level: ids 0-255 are UTF-8 bytes, 256 is BOS, 257 is EOS",
};

/**
 * The tokenizer a model was trained with: the one it carries (a Hugging Face model directory
 * sets it), else the byte tokenizer of every model kind this project builds itself.
 */
export function tokenizerOf(model: Pick<CausalLM, "tokenizer">): Tokenizer {
  return model.tokenizer ?? byteTokenizer;
}
