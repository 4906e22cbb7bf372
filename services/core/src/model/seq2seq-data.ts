/**
 * Pre-training rows for the Seq2Seq policy, shaped like the built-in RL task (a sentence's
 * beginning as the prompt, its continuation as the completion): each row is one sentence from
 * its BOS, split after k bytes into source `BOS s[0:k]` and target `s[k:] EOS`.
 *
 * One k per batch (uniform in 1..maxSource, and shorter than every chosen sentence) keeps the
 * encoder and decoder loops at T + 1 steps together; with a k per row the batch would pay for
 * max k − min k extra steps. Rows differ in sentence, batches in k.
 */
import { ValidationError } from "../errors.js";
import type { TokenStream, WindowBatch } from "./pretrain.js";
import type { Rng } from "./rng.js";
import { EOS } from "./tokenizer.js";

/** Longest source (bytes after BOS) drawn by default: RL prompts are 2–5 words, ≤ 24 bytes. */
export const DEFAULT_MAX_SOURCE = 32;

/**
 * Draws `rows` split sentences of T input positions each (right-padded with EOS, mask 0). The
 * loss mask covers every real target (the encoder head scores the source, the decoder the rest);
 * `targetMask` only the completion's, i.e. positions ≥ k (position k = S − 1 predicts s[k]).
 */
export function sampleSplitRows(
  stream: TokenStream,
  rows: number,
  t: number,
  rng: Rng,
  maxSource = DEFAULT_MAX_SOURCE,
): WindowBatch & { sourceLengths: number[]; targetMask: Float32Array } {
  const { tokens, starts } = stream;
  const n = starts.length;
  const end = (i: number) => (i + 1 < n ? (starts[i + 1] as number) : tokens.length); // one past EOS
  // sentence i has end(i) − starts[i] − 2 bytes
  let longest = 0;
  for (let i = 0; i < n; i++) longest = Math.max(longest, end(i) - (starts[i] as number) - 2);
  const kMax = Math.min(maxSource, t - 1, longest - 1);
  if (kMax < 1) throw new ValidationError("sentences", "need a sentence of at least 2 bytes");
  const k = 1 + rng.nextInt(kMax);
  const x = new Int32Array(rows * t).fill(EOS);
  const y = new Int32Array(rows * t).fill(EOS);
  const mask = new Float32Array(rows * t);
  const targetMask = new Float32Array(rows * t);
  for (let r = 0; r < rows; r++) {
    let i = rng.nextInt(n);
    // rejection: the sentence must continue past the source (≥ 1 byte after s[0:k])
    while (end(i) - (starts[i] as number) - 2 <= k) i = rng.nextInt(n);
    const s = starts[i] as number;
    const len = Math.min(end(i) - s, t + 1); // row tokens BOS s EOS, cut to T + 1
    for (let p = 0; p + 1 < len; p++) {
      x[r * t + p] = tokens[s + p] as number;
      y[r * t + p] = tokens[s + p + 1] as number;
      mask[r * t + p] = 1;
      if (p >= k) targetMask[r * t + p] = 1;
    }
  }
  return { x, y, mask, sourceLengths: new Array<number>(rows).fill(k + 1), targetMask };
}
