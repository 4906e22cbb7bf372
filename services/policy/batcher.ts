/**
 * Batched serving in a Policy replica, beside the continuously batched sampler every model keeps
 * (core/src/model/continuous-sampler.ts):
 * - `ScoreBatcher`: Logprobs calls that arrive together share forward passes. A call is queued;
 *   at the next turn of the event loop every queued call is scored in one `sequenceLogprobs`
 *   (rows grouped by width, so each call's log-probs are bit-identical to scoring it alone).
 * - `RowGate`: the bound on the rows a replica holds, past which calls fail with
 *   RESOURCE_EXHAUSTED (retryable) instead of queueing without limit.
 */
import { OverloadedError } from "../core/src/errors.js";
import type { CausalLM } from "../core/src/model/causal-lm.js";
import { checkScoring, sequenceLogprobs } from "../core/src/model/sampler.js";

interface ScoreCall {
  prompts: number[][];
  completions: number[][];
  resolve(logprobs: number[][]): void;
  reject(err: unknown): void;
}

/** Coalesces concurrent log-prob calls on one model into shared passes (see the module doc). */
export class ScoreBatcher {
  private pending: ScoreCall[] = [];
  private flushing: Promise<void> | null = null;

  constructor(private readonly model: CausalLM) {}

  /** Sequences queued and not scored yet. */
  get waiting(): number {
    return this.pending.reduce((n, c) => n + c.prompts.length, 0);
  }

  /**
   * Per-token log-probs of each completion given its prompt (as `sequenceLogprobs`). The call is
   * checked on its own first, so a bad one is refused without failing the calls it would share
   * a pass with.
   */
  score(prompts: number[][], completions: number[][]): Promise<number[][]> {
    checkScoring(this.model, prompts, completions);
    return new Promise((resolve, reject) => {
      this.pending.push({ prompts, completions, resolve, reject });
      this.flushing ??= new Promise<void>((done) => setImmediate(done)).then(() => this.flush());
    });
  }

  /** Resolves once nothing is queued (e.g. before freeing the model). */
  async idle(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private flush(): void {
    const calls = this.pending;
    this.pending = [];
    this.flushing = null;
    try {
      const all = sequenceLogprobs(
        this.model,
        calls.flatMap((c) => c.prompts),
        calls.flatMap((c) => c.completions),
      );
      let at = 0;
      for (const c of calls) {
        c.resolve(all.slice(at, at + c.prompts.length));
        at += c.prompts.length;
      }
    } catch (err) {
      for (const c of calls) c.reject(err);
    }
  }
}

/**
 * Counts the rows (generated rows or scored sequences) a replica holds and refuses a call that
 * would put more than `queueRows` of them beyond one batch of `batchRows`. An idle replica takes
 * any single call, so every valid request can run somewhere.
 */
export class RowGate {
  private rows = 0;

  /** `what` names the work in the refusal ("Generate rows", "Logprobs sequences"). */
  constructor(
    private readonly batchRows: number,
    private readonly queueRows: number,
    private readonly what: string,
  ) {}

  /** Rows admitted and not released. */
  get held(): number {
    return this.rows;
  }

  /** Admits `n` rows, or throws OverloadedError; returns the (idempotent) release. */
  admit(n: number): () => void {
    if (this.rows > 0 && this.rows + n > this.batchRows + this.queueRows) {
      throw new OverloadedError(
        `Policy replica busy: ${this.rows} ${this.what} in flight, ${n} more would exceed one batch of ${this.batchRows} plus a queue of ${this.queueRows} (--policy-batch-rows, --policy-queue-rows); retry later or call another replica`,
      );
    }
    this.rows += n;
    let held = true;
    return () => {
      if (held) this.rows -= n;
      held = false;
    };
  }
}
