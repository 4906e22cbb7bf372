/**
 * Continuous batching over one model: every request's rows share the model's forward passes.
 *
 * Rows wait in a FIFO queue, join the running batch at a token boundary (as many as there are free
 * slots, up to `maxRows`) and leave it as soon as they finish, so a long request never holds a
 * short one back and a replica decodes one batch however many calls are in flight. A join
 * prefills each distinct prompt once, whatever the number of its rows (the G samples of a prompt,
 * equal prompts of different requests), and copies its state into all of their slots.
 *
 * Each request keeps its own sampling parameters, seed, stop sequences and token budget; row r of
 * a request draws from the random stream (seed, r), and the decoders are batch-invariant
 * (row-decoder.ts), so a request's tokens, log-probs and finish reasons are bit-identical
 * whether it ran alone or batched with others, whenever it joined.
 *
 * The loop yields to the event loop after every token, so calls keep arriving (and join at the
 * next boundary), health checks are answered, tokens stream out, and an aborted request's rows
 * leave at the next boundary (its promise rejects with the signal's reason).
 */

import type { CausalLM } from "./causal-lm.js";
import { Rng } from "./rng.js";
import type { RowDecoder } from "./row-decoder.js";
import {
  checkRows,
  type GenerationResult,
  matchStop,
  type OnToken,
  promptRows,
  type SamplingParams,
  sampleToken,
  stopBytes,
  validateSamplingParams,
} from "./sampling.js";
import { tokenizerOf } from "./tokenizer.js";
import type { Tokenizer } from "./tokenizer-types.js";

/** Rows decoded together when no limit is given (a Policy replica sets its own). */
export const DEFAULT_MAX_ROWS = 256;

/** Slots are allocated in multiples of this (fewer re-layouts while a burst of calls joins). */
const SLOT_STEP = 8;

/** One request: its rows, rules and results. */
interface Job {
  /** Prompt rows, BOS included. */
  readonly rows: number[][];
  readonly p: SamplingParams;
  readonly stops: Uint8Array[];
  readonly results: GenerationResult[];
  readonly rngs: Rng[];
  /** Each row's completion bytes so far (kept only when there are stop sequences). */
  readonly bytes: number[][];
  readonly onToken: OnToken | undefined;
  readonly signal: AbortSignal | undefined;
  /** Next row to admit. */
  next: number;
  /** Rows not finished yet. */
  left: number;
  done: boolean;
  resolve(results: GenerationResult[]): void;
  reject(err: unknown): void;
}

/** A row in a slot: the token to feed next and its position. */
interface Live {
  readonly job: Job;
  readonly r: number;
  token: number;
  position: number;
}

/** Samples every submitted request in one continuously batched decoding loop (see the module doc). */
export class ContinuousSampler {
  private decoder: RowDecoder | null = null;
  private slots: (Live | null)[] = [];
  private readonly queue: Job[] = [];
  /** Every request not yet resolved or rejected. */
  private readonly jobs = new Set<Job>();
  private loop: Promise<void> | null = null;
  private queued = 0;
  private live = 0;

  /** `maxRows`: most rows decoded together; more wait at token boundaries. */
  /** The model's tokenizer: its BOS starts rows, its EOS ids end them, its bytes spell stops. */
  private readonly tokenizer: Tokenizer;

  constructor(
    private readonly model: CausalLM,
    private readonly maxRows = DEFAULT_MAX_ROWS,
  ) {
    this.tokenizer = tokenizerOf(model);
  }

  /** Rows waiting for a slot. */
  get waiting(): number {
    return this.queued;
  }

  /** Rows being decoded. */
  get active(): number {
    return this.live;
  }

  /**
   * Samples a continuation of every prompt (token ids; BOS is prepended) under `p`. Bad params,
   * token ids or a prompt leaving no room for one new token are a ValidationError (rejected).
   * `onToken` sees row r's tokens as they are sampled.
   */
  async submit(
    prompts: number[][],
    p: SamplingParams,
    onToken?: OnToken,
    signal?: AbortSignal,
  ): Promise<GenerationResult[]> {
    validateSamplingParams(p);
    const rows = promptRows(prompts, this.tokenizer.bos);
    checkRows(this.model, rows, "prompts", () => 1);
    signal?.throwIfAborted();
    if (rows.length === 0) return [];
    return new Promise<GenerationResult[]>((resolve, reject) => {
      const job: Job = {
        rows,
        p,
        stops: stopBytes(p.stop),
        results: rows.map(() => ({ tokens: [], logprobs: [], finishReason: "length" })),
        rngs: rows.map((_, r) => new Rng(p.seed, r)),
        bytes: rows.map(() => []),
        onToken,
        signal,
        next: 0,
        left: rows.length,
        done: false,
        resolve,
        reject,
      };
      this.queue.push(job);
      this.jobs.add(job);
      this.queued += rows.length;
      this.loop ??= this.run();
    });
  }

  /** Resolves once nothing is queued or decoding (e.g. before freeing the model). */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length > 0 || this.live > 0) {
        // Yield first: calls that arrived with this one (a burst of requests) join its first step.
        await new Promise((resolve) => setImmediate(resolve));
        this.dropAborted();
        this.admit();
        if (this.live > 0) this.decodeStep();
      }
    } catch (err) {
      for (const job of this.jobs) this.fail(job, err);
    } finally {
      this.decoder?.dispose();
      this.decoder = null;
      this.slots = [];
      this.queued = 0;
      this.live = 0;
      this.loop = null;
    }
  }

  /** Moves queued rows into free slots (growing the batch up to maxRows) and samples their first tokens. */
  private admit(): void {
    if (this.queue.length === 0) return;
    const free = this.slots.flatMap((l, s) => (l === null ? [s] : []));
    const room = free.length + this.maxRows - this.slots.length;
    const taken: { job: Job; r: number }[] = [];
    while (taken.length < room && this.queue.length > 0) {
      const job = this.queue[0] as Job;
      taken.push({ job, r: job.next++ });
      if (job.next === job.rows.length) this.queue.shift();
    }
    if (taken.length === 0) return;
    this.queued -= taken.length;
    if (taken.length > free.length) this.grow(taken.length - free.length, free);
    // one prefill per distinct prompt, one prefill call per prefill key
    const decoder = this.decoder as RowDecoder;
    const groups = new Map<
      number,
      Map<string, { prompt: number[]; rows: { job: Job; r: number; slot: number }[] }>
    >();
    taken.forEach(({ job, r }, i) => {
      const prompt = job.rows[r] as number[];
      const key = decoder.prefillKey(prompt.length);
      const group = groups.get(key) ?? new Map();
      groups.set(key, group);
      const text = prompt.join(",");
      const entry = group.get(text) ?? { prompt, rows: [] };
      group.set(text, entry);
      entry.rows.push({ job, r, slot: free[i] as number });
    });
    const v = this.model.config.vocabSize;
    for (const group of groups.values()) {
      const entries = [...group.values()];
      const logits = decoder.prefill(
        entries.map((e) => e.prompt),
        entries.map((e) => e.rows.map((x) => x.slot)),
      );
      entries.forEach((e, k) => {
        const z = logits.subarray(k * v, (k + 1) * v);
        for (const { job, r, slot } of e.rows) {
          this.slots[slot] = { job, r, token: 0, position: e.prompt.length };
          this.live++;
          this.sample(slot, z);
        }
      });
    }
  }

  /** Adds slots for `need` more rows (in SLOT_STEP multiples, at most maxRows), listing them in `free`. */
  private grow(need: number, free: number[]): void {
    const old = this.slots.length;
    const capacity = Math.min(this.maxRows, Math.ceil((old + need) / SLOT_STEP) * SLOT_STEP);
    if (this.decoder === null) this.decoder = this.model.decoder(capacity);
    else this.decoder.resize(capacity, [...this.slots.keys()]);
    for (let s = old; s < capacity; s++) {
      this.slots.push(null);
      free.push(s);
    }
  }

  /** One token for every live row; then, if at most half the slots are live, packs them. */
  private decodeStep(): void {
    const decoder = this.decoder as RowDecoder;
    const tokens = new Int32Array(this.slots.length);
    const positions = new Int32Array(this.slots.length);
    this.slots.forEach((l, s) => {
      if (l === null) return;
      tokens[s] = l.token;
      positions[s] = l.position;
    });
    const logits = decoder.step(tokens, positions);
    const v = this.model.config.vocabSize;
    this.slots.forEach((l, s) => {
      if (l === null) return;
      l.position++;
      this.sample(s, logits.subarray(s * v, (s + 1) * v));
    });
    if (this.live > 0 && this.live <= this.slots.length / 2 && this.queue.length === 0) {
      const keep = this.slots.flatMap((l, s) => (l === null ? [] : [s]));
      const capacity = Math.ceil(keep.length / SLOT_STEP) * SLOT_STEP;
      if (capacity < this.slots.length) {
        decoder.resize(capacity, keep);
        this.slots = [
          ...keep.map((s) => this.slots[s] as Live),
          ...new Array(capacity - keep.length).fill(null),
        ];
      }
    }
  }

  /** Picks slot s's next token from its logits z and records it; frees the slot when the row ends. */
  private sample(s: number, z: Float32Array): void {
    const l = this.slots[s] as Live;
    const { job, r } = l;
    const res = job.results[r] as GenerationResult;
    const { id, logprob: lp } = sampleToken(z, job.p, job.rngs[r] as Rng);
    res.tokens.push(id);
    res.logprobs.push(lp);
    try {
      job.onToken?.(r, id, lp);
    } catch (err) {
      this.fail(job, err);
      return;
    }
    if (!this.finished(job, r, id)) {
      l.token = id;
      return;
    }
    this.free(s);
    if (--job.left === 0 && !job.done) {
      job.done = true;
      this.jobs.delete(job);
      job.resolve(job.results);
    }
  }

  /**
   * Whether row r ends with the token `id` it just sampled, recording why in its result: an EOS
   * (with stopAtEos), a stop sequence its bytes now end with, its token budget, or the context.
   */
  private finished(job: Job, r: number, id: number): boolean {
    const res = job.results[r] as GenerationResult;
    let stopped = -1;
    const bytes = job.stops.length > 0 ? this.tokenizer.tokenBytes(id) : undefined;
    if (bytes !== undefined && bytes.length > 0) {
      (job.bytes[r] as number[]).push(...bytes);
      stopped = matchStop(job.bytes[r] as number[], job.stops, bytes.length);
    }
    if (job.p.stopAtEos && this.tokenizer.eos.includes(id)) res.finishReason = "eos";
    else if (stopped >= 0) {
      res.finishReason = "stop";
      res.stop = job.p.stop?.[stopped];
    } else if (res.tokens.length >= job.p.maxNewTokens) res.finishReason = "length";
    else if ((job.rows[r] as number[]).length + res.tokens.length >= this.model.config.contextLength)
      res.finishReason = "context";
    else return false;
    return true;
  }

  /** Removes every request whose signal fired (queued rows and slots), rejecting it with the reason. */
  private dropAborted(): void {
    for (const job of this.jobs) if (job.signal?.aborted) this.fail(job, job.signal.reason);
  }

  /** Ends `job` with `err`: its queued rows and slots are let go. */
  private fail(job: Job, err: unknown): void {
    if (job.done) return;
    job.done = true;
    this.jobs.delete(job);
    const at = this.queue.indexOf(job);
    if (at >= 0) {
      this.queue.splice(at, 1);
      this.queued -= job.rows.length - job.next;
    }
    this.slots.forEach((l, s) => {
      if (l?.job === job) this.free(s);
    });
    job.reject(err);
  }

  private free(s: number): void {
    this.slots[s] = null;
    this.live--;
  }
}
