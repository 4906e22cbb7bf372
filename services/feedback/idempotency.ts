/**
 * The idempotency side of the feedback contract (docs/feedback-contract.md#idempotency): a
 * bounded cache of scores by the caller's idempotency key, shared by every in-process scorer.
 *
 * Why a cache even for a deterministic scorer: the contract says the same key with the same text
 * gives the same score and the same key with different text is refused, and only a memory of the
 * keys can refuse that (a caller that reuses trajectory ids across runs would otherwise mix up
 * rewards silently). For a non-deterministic scorer (an LLM judge sampling) the cache is what
 * makes a retried call answer the same. ERROR results are not kept: a retry may succeed.
 */
import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type ScoreSchema, ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ValidationError } from "../core/src/errors.js";

/** One score as a handler returns it. */
export type ScoreInit = MessageInitShape<typeof ScoreSchema>;

/** Keys remembered by default: a few steps of a large run (64 prompts × 16 samples each). */
export const DEFAULT_IDEMPOTENCY_CAPACITY = 8192;

interface Entry {
  /** SHA-256 of the prompt and completion the key was first used with. */
  content: string;
  score: ScoreInit;
}

/** SHA-256 (hex) of one item's texts; a NUL separates them so ("ab","c") ≠ ("a","bc"). */
function fingerprint(prompt: string, completion: string): string {
  return createHash("sha256").update(prompt).update("\0").update(completion).digest("hex");
}

/**
 * Scores by idempotency key, the oldest forgotten past `capacity` (insertion order, refreshed on
 * a hit, so a retried batch stays in).
 */
export class IdempotencyCache {
  private readonly entries = new Map<string, Entry>();
  /** Scores answered from the cache so far (for tests and logs). */
  hits = 0;

  constructor(private readonly capacity = DEFAULT_IDEMPOTENCY_CAPACITY) {
    if (!(capacity >= 1)) throw new ValidationError("capacity", `${capacity} must be at least 1`);
  }

  /**
   * The score stored under `key` for these texts, or undefined when the key is new ("" never
   * hits). Throws ValidationError naming `field` when the key was used for other texts.
   */
  lookup(key: string, prompt: string, completion: string, field: string): ScoreInit | undefined {
    if (key === "") return undefined;
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.content !== fingerprint(prompt, completion)) {
      throw new ValidationError(field, `"${key}" was already used for a different prompt or completion`);
    }
    this.entries.delete(key);
    this.entries.set(key, e);
    this.hits++;
    return e.score;
  }

  /** Remember `score` under `key` (not "" and not an ERROR, which a retry may turn into a score). */
  store(key: string, prompt: string, completion: string, score: ScoreInit): void {
    if (key === "" || score.status === ScoreStatus.ERROR) return;
    this.entries.delete(key);
    this.entries.set(key, { content: fingerprint(prompt, completion), score });
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** Keys held now. */
  get size(): number {
    return this.entries.size;
  }
}
