/**
 * What a reward model's scalar head reads from its backbone (any `CausalLM`: Transformer, GRU,
 * LSTM, Seq2Seq, a Hugging Face GPT-2 or Llama): the backbone's output z_t = U·h_t + c at every
 * completion position t, mean-pooled over the completion.
 *
 * Why the output z_t and not h_t: `CausalLM` exposes logits only, and z_t is a fixed linear image
 * of the last hidden state h_t (U is the output projection, c its bias); a linear head w·z_t is
 * the linear head (Uᵀw)·h_t on the hidden state, so reading z_t loses nothing a linear head on
 * h_t could express whenever V ≥ d and U has full column rank (the byte models: V = 258 ≥ d = 128),
 * and it works for every family without a per-family hook. Why mean-pooled and not the last
 * position: the rules an AI labeller applies here add up per-word evidence over the whole
 * completion (a lexicon's valences, repeated words), and the mean over positions keeps every
 * position's evidence, where the last state of a small LM is dominated by predicting the next
 * byte; it is also defined for a one-token completion. An empty completion is read at the last
 * prompt position. Two more inputs join them: the completion's token shares (the mean one-hot of
 * its tokens, what the backbone's input layer reads: a linear head on them is a per-token value
 * averaged, the shape of a lexicon rule) and log(1 + its length). Last, the token counts in a
 * step basis: for each token v and k = 1..COUNT_STEPS, [count_v ≥ k]. Why: a linear head on them
 * is Σ_v g_v(count_v) for any function g_v of the integer count up to COUNT_STEPS, so rules that
 * are non-monotone in a count (a length window: too short and too long both lose) become linear,
 * which means and shares (count / length) cannot express. They are read from the tokens alone,
 * whatever the rule. Measured on `length(4-6)` labels from the GRU: held-out pairwise accuracy
 * 84.3% without them (docs/reward-model.md has the figure with them).
 */
import * as tf from "@tensorflow/tfjs";
import type { CausalLM } from "./causal-lm.js";
import { readPass, widthBucket } from "./row-decoder.js";
import { promptRow } from "./sampling.js";
import { tokenizerOf } from "./tokenizer.js";

/** Rows per forward pass (bounds memory: 32 × 128 positions × 4096 logits is 64 MB). */
const FEATURE_CHUNK = 32;

/** Steps of the count basis per token: counts above it read as COUNT_STEPS. */
export const COUNT_STEPS = 12;

/**
 * Length of the feature vector for `model`: V pooled outputs, V token shares, 1 length, and
 * V × COUNT_STEPS count steps.
 */
export function featureCount(model: CausalLM): number {
  return (2 + COUNT_STEPS) * model.config.vocabSize + 1;
}

/** A prompt and its completion, as text (what a FeedbackService is given). */
export interface TextPair {
  prompt: string;
  completion: string;
}

/** One row as the backbone reads it: tokens, and the positions the pooling averages. */
interface FeatureRow {
  tokens: number[];
  /** First and one-past-last pooled position. */
  from: number;
  to: number;
  /** Tokens of the (possibly cut) prompt part, for models that encode the prompt (Seq2Seq). */
  head: number;
}

/**
 * [BOS, …prompt, …completion] cut to the context length: the prompt loses its start first (the
 * completion is what is scored), then the completion its end.
 */
function featureRow(model: CausalLM, item: TextPair): FeatureRow {
  const tok = tokenizerOf(model);
  const ctx = model.config.contextLength;
  let head = promptRow(tok.encode(item.prompt), tok.bos);
  const completion = tok.encode(item.completion).slice(0, ctx - 1);
  if (head.length + completion.length > ctx) head = head.slice(head.length + completion.length - ctx);
  if (head.length === 0) head = [tok.bos ?? tok.pad];
  const tokens = [...head, ...completion];
  return completion.length === 0
    ? { tokens, from: head.length - 1, to: head.length, head: head.length }
    : { tokens, from: head.length, to: tokens.length, head: head.length };
}

/**
 * The pooled features (length V, the backbone's vocabulary) of every item, in order:
 * f = (1/|C|) Σ_{t∈C} z_t over the completion positions C. Rows of one padded width share a pass
 * (right padding: a causal model's z_t never sees later positions), so an item's features do not
 * depend on the items scored with it. Inference ops: nothing here is differentiated.
 */
export function pooledFeatures(model: CausalLM, items: readonly TextPair[]): Float32Array[] {
  const rows = items.map((item) => featureRow(model, item));
  const vocab = model.config.vocabSize;
  const out: Float32Array[] = rows.map(() => new Float32Array(featureCount(model)));
  const groups = new Map<number, number[]>();
  rows.forEach((row, i) => {
    const width = widthBucket(row.tokens.length, model.config.contextLength);
    groups.set(width, [...(groups.get(width) ?? []), i]);
  });
  const pad = tokenizerOf(model).pad;
  for (const [width, members] of groups) {
    for (let start = 0; start < members.length; start += FEATURE_CHUNK) {
      const idx = members.slice(start, start + FEATURE_CHUNK);
      const x = new Int32Array(idx.length * width).fill(pad);
      const m = new Float32Array(idx.length * width);
      idx.forEach((i, r) => {
        const row = rows[i] as FeatureRow;
        row.tokens.forEach((t, j) => {
          x[r * width + j] = t;
        });
        // mask_t = 1/|C| on the pooled positions, so Σ_t mask_t·z_t is the mean
        for (let j = row.from; j < row.to; j++) m[r * width + j] = 1 / (row.to - row.from);
      });
      const pooled = readPass(() => {
        const xs = tf.tensor2d(x, [idx.length, width], "int32"); // [B, W]
        const mask = tf.tensor3d(m, [idx.length, width, 1]); // [B, W, 1]
        const z = model.forward(xs, undefined, {
          ops: "inference",
          sourceLengths: idx.map((i) => (rows[i] as FeatureRow).head),
        }); // [B, W, V]
        // f = Σ_t mask_t·z_t
        return tf.sum(tf.mul(z, mask), 1); // [B, V]
      });
      idx.forEach((i, r) => {
        const row = rows[i] as FeatureRow;
        const f = out[i] as Float32Array;
        f.set(pooled.subarray(r * vocab, (r + 1) * vocab));
        // b = (1/|C|) Σ_{t∈C} onehot(x_t): the completion's tokens as the input layer reads them
        const completion = row.tokens.length - row.head;
        for (let j = row.head; j < row.tokens.length; j++)
          f[vocab + (row.tokens[j] as number)] =
            (f[vocab + (row.tokens[j] as number)] as number) + 1 / completion;
        // n = log(1 + |completion|)
        f[2 * vocab] = Math.log1p(completion);
        // s_{v,k} = [count_v ≥ k], k = 1..COUNT_STEPS
        const counts = new Map<number, number>();
        for (let j = row.head; j < row.tokens.length; j++) {
          const t = row.tokens[j] as number;
          const c = (counts.get(t) ?? 0) + 1;
          counts.set(t, c);
          if (c <= COUNT_STEPS) f[2 * vocab + 1 + t * COUNT_STEPS + (c - 1)] = 1;
        }
      });
    }
  }
  return out;
}
