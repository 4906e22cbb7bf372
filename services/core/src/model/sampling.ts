/**
 * The rules of sampling one row, shared by the batch sampler (continuous-sampler.ts), the Policy
 * and the CLI: sampling parameters and their validation, token choice from one row of logits,
 * stop sequences matched on bytes, and a completion's text. See sampler.ts for the conventions
 * (which log-probs are reported, what a stop sequence leaves in the tokens).
 */
import { ValidationError } from "../errors.js";
import type { CausalLM } from "./causal-lm.js";
import type { Rng } from "./rng.js";
import { byteTokenizer } from "./tokenizer.js";
import { type Tokenizer, tokensBytes } from "./tokenizer-types.js";

/** How to pick tokens. */
export interface SamplingParams {
  /** Most tokens to generate per row (EOS included when it ends a row). */
  maxNewTokens: number;
  /** Softmax temperature; 0 = greedy (argmax, lowest id on ties). */
  temperature: number;
  /** Keep only the k most likely tokens; 0 = off. */
  topK: number;
  /** Keep the smallest most-likely set with probability ≥ topP; 1 = off. */
  topP: number;
  /** Seeds the per-row random streams (row r uses stream (seed, r)). */
  seed: number;
  /** Stop a row when it samples EOS (the EOS is returned as its last token). */
  stopAtEos: boolean;
  /**
   * Stop a row when its completion's bytes end with one of these non-empty strings (see the module
   * doc: the stop's tokens are kept, `completionText` leaves it out). Empty or absent = none.
   */
  stop?: readonly string[];
}

/** Why a row stopped: its token budget, an EOS, a stop sequence, or the model's context length. */
export type FinishReason = "length" | "eos" | "stop" | "context";

/** One generated row. */
export interface GenerationResult {
  /** Sampled token ids (prompt not included). */
  tokens: number[];
  /** log π_θ(token | prefix) of each sampled token under the unmodified model (see module doc). */
  logprobs: number[];
  finishReason: FinishReason;
  /**
   * The stop sequence that ended the row (finishReason "stop"; see matchStop when several
   * match at once), which the last token's bytes completed (a sub-word token may write bytes after
   * it); absent otherwise.
   */
  stop?: string;
}

/** Per-token streaming callback: row index, token id and its log π_θ. */
export type OnToken = (row: number, tokenId: number, logprob: number) => void;

/**
 * The row the model reads for a prompt: the tokenizer's BOS followed by the prompt ids (BOS is
 * not doubled); just the prompt for a model without BOS.
 */
export function promptRow(prompt: readonly number[], bos: number | null): number[] {
  return bos === null || prompt[0] === bos ? [...prompt] : [bos, ...prompt];
}

/**
 * The rows the model reads for `prompts` (see promptRow). An empty prompt for a model without
 * BOS leaves nothing to predict the first token from: ValidationError naming `prompts[i]`.
 */
export function promptRows(prompts: readonly (readonly number[])[], bos: number | null): number[][] {
  return prompts.map((prompt, i) => {
    if (prompt.length === 0 && bos === null)
      throw new ValidationError(`prompts[${i}]`, "must not be empty: the model has no BOS token to start it");
    return promptRow(prompt, bos);
  });
}

/** Checks sampling parameters; throws ValidationError naming the bad field. */
export function validateSamplingParams(p: SamplingParams): SamplingParams {
  const bad = (field: string, reason: string): never => {
    throw new ValidationError(`params.${field}`, reason);
  };
  if (!Number.isInteger(p.maxNewTokens) || p.maxNewTokens < 1) bad("maxNewTokens", "must be an integer ≥ 1");
  if (!(p.temperature >= 0) || !Number.isFinite(p.temperature)) bad("temperature", "must be finite and ≥ 0");
  if (!Number.isInteger(p.topK) || p.topK < 0) bad("topK", "must be an integer ≥ 0");
  if (!(p.topP > 0 && p.topP <= 1)) bad("topP", "must be in (0, 1]");
  if (!Number.isSafeInteger(p.seed)) bad("seed", "must be a safe integer");
  (p.stop ?? []).forEach((s, i) => {
    if (typeof s !== "string" || s === "") bad(`stop[${i}]`, "must be a non-empty string");
  });
  return p;
}

const utf8 = new TextEncoder();

/** The UTF-8 bytes of each stop sequence. */
export function stopBytes(stop: readonly string[] | undefined): Uint8Array[] {
  return (stop ?? []).map((s) => utf8.encode(s));
}

/** Whether `bytes` ends with `tail`. */
function endsWith(bytes: readonly number[], tail: Uint8Array, length = tail.length): boolean {
  return occursAt(bytes, tail, bytes.length - length, length);
}

/** Whether bytes[at, at + length) equals tail[0, length). */
function occursAt(bytes: ArrayLike<number>, tail: Uint8Array, at: number, length = tail.length): boolean {
  if (at < 0 || at + length > bytes.length) return false;
  for (let k = 0; k < length; k++) if (bytes[at + k] !== tail[k]) return false;
  return true;
}

/**
 * Index of the stop sequence that the last `newBytes` bytes of `bytes` complete, or −1: a token
 * of a sub-word tokenizer may write several bytes, so a stop may end inside it. When several do,
 * the one that ends first wins, then the longest (with one byte per token: the longest of those
 * `bytes` ends with).
 */
export function matchStop(bytes: readonly number[], stops: readonly Uint8Array[], newBytes = 1): number {
  let best = -1;
  let bestEnd = Number.POSITIVE_INFINITY;
  stops.forEach((s, i) => {
    for (let end = Math.max(s.length, bytes.length - newBytes + 1); end <= bytes.length; end++) {
      if (!occursAt(bytes, s, end - s.length)) continue;
      if (end < bestEnd || (end === bestEnd && s.length > (stops[best] as Uint8Array).length)) {
        best = i;
        bestEnd = end;
      }
      break;
    }
  });
  return best;
}

/**
 * How many leading bytes of a completion are its text: all of them, or those before the stop
 * sequence that ended it (its first occurrence: the row stopped as soon as one was complete, and
 * bytes of the same token after it are dropped too).
 */
export function textLength(bytes: ArrayLike<number>, stop: string | undefined): number {
  if (!stop) return bytes.length;
  const s = utf8.encode(stop);
  for (let at = 0; at + s.length <= bytes.length; at++) if (occursAt(bytes, s, at)) return at;
  return bytes.length;
}

/**
 * How many trailing bytes of `bytes` could still be the start of a stop sequence (the longest
 * proper prefix of any stop that `bytes` ends with): a streaming server holds them back until the
 * next bytes show whether they belong to the stop (never sent) or to the text.
 */
export function stopHoldback(bytes: readonly number[], stops: readonly Uint8Array[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, bytes.length); k > hold; k--) {
      if (endsWith(bytes, s, k)) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

/**
 * A completion's text: its tokens' bytes decoded as UTF-8, without a final EOS (special tokens
 * carry no bytes) and without the stop sequence that ended it. `tok` is the model's tokenizer
 * (default: the byte tokenizer); invalid UTF-8 becomes U+FFFD.
 */
export function completionText(
  r: Pick<GenerationResult, "tokens" | "stop">,
  tok: Tokenizer = byteTokenizer,
): string {
  const bytes = tokensBytes(tok, r.tokens);
  return new TextDecoder("utf-8", { fatal: false }).decode(bytes.subarray(0, textLength(bytes, r.stop)));
}

/**
 * Checks token rows for `model`: every id in [0, V) and row i plus extra(i) positions within the
 * context length. Throws ValidationError naming `field[i]` (and the token, `field[i][j]`).
 */
export function checkRows(
  model: CausalLM,
  rows: readonly (readonly number[])[],
  field: string,
  extra: (i: number) => number,
): void {
  const { contextLength, vocabSize } = model.config;
  rows.forEach((row, i) => {
    const bad = row.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
    if (bad >= 0)
      throw new ValidationError(`${field}[${i}][${bad}]`, `token id must be in [0, ${vocabSize})`);
    if (row.length + extra(i) > contextLength) {
      throw new ValidationError(
        `${field}[${i}]`,
        `needs ${row.length + extra(i)} positions (BOS included) but the context length is ${contextLength}`,
      );
    }
  });
}

/** Σ_i exp(z_i − max), in float64 and id order: the softmax's normaliser. */
function expSum(z: Float32Array, max: number): number {
  let sum = 0;
  for (let i = 0; i < z.length; i++) sum += Math.exp((z[i] as number) - max);
  return sum;
}

/** Scratch weights of one draw (sampling is synchronous, so one buffer serves every call). */
let weights = new Float64Array(0);

/**
 * Picks a token from one row of logits according to `p` (see SamplingParams) and reports its
 * log π_θ under the unmodified distribution, z_id − logsumexp(z) in float64. One pass of exps
 * serves both at temperature 1 without truncation (the RL default): its weights exp(z − max) are
 * the softmax's numerators. No allocation but the result: it runs for every row of every token.
 * The loops keep their operands in locals and skip the division at T = 1 (x / 1 is x exactly),
 * so the exps, their id-order sum and the draw are the same float64 operations as ever.
 */
export function sampleToken(z: Float32Array, p: SamplingParams, rng: Rng): { id: number; logprob: number } {
  const n = z.length;
  let best = 0;
  let max = z[0] as number;
  for (let i = 1; i < n; i++) {
    const v = z[i] as number;
    if (v > max) {
      max = v;
      best = i;
    }
  }
  const t = p.temperature;
  if (t === 0) return { id: best, logprob: (z[best] as number) - (max + Math.log(expSum(z, max))) };
  if (p.topK > 0 || p.topP < 1) {
    const id = drawTruncated(z, p, rng, max);
    return { id, logprob: (z[id] as number) - (max + Math.log(expSum(z, max))) };
  }
  // q_i ∝ exp((z_i − max) / T) over every token, in id order
  if (weights.length < n) weights = new Float64Array(n);
  const w = weights;
  let total = 0;
  if (t === 1) {
    for (let i = 0; i < n; i++) {
      const e = Math.exp((z[i] as number) - max);
      w[i] = e;
      total += e;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const e = Math.exp(((z[i] as number) - max) / t);
      w[i] = e;
      total += e;
    }
  }
  let id = n - 1;
  let u = rng.nextFloat() * total;
  for (let k = 0; k < n; k++) {
    u -= w[k] as number;
    if (u < 0) {
      id = k;
      break;
    }
  }
  const sum = t === 1 ? total : expSum(z, max);
  return { id, logprob: (z[id] as number) - (max + Math.log(sum)) };
}

/** The token `sampleToken` picks (see there). */
export function chooseToken(z: Float32Array, p: SamplingParams, rng: Rng): number {
  return sampleToken(z, p, rng).id;
}

/** A draw among the top-k / top-p tokens: sorted by logit (ties: lower id first), then truncated. */
function drawTruncated(z: Float32Array, p: SamplingParams, rng: Rng, max: number): number {
  let ids = Array.from(z.keys());
  ids.sort((a, b) => (z[b] as number) - (z[a] as number) || a - b);
  if (p.topK > 0) ids = ids.slice(0, p.topK);
  // q_i ∝ exp((z_i − max) / T)
  const w = ids.map((i) => Math.exp(((z[i] as number) - max) / p.temperature));
  let total = w.reduce((a, b) => a + b, 0);
  if (p.topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < w.length && cum < p.topP * total) cum += w[keep++] as number;
    ids = ids.slice(0, Math.max(1, keep));
    total = cum;
  }
  let u = rng.nextFloat() * total;
  for (let k = 0; k < ids.length; k++) {
    u -= w[k] as number;
    if (u < 0) return ids[k] as number;
  }
  return ids[ids.length - 1] as number;
}
