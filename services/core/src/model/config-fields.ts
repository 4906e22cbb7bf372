/**
 * The checks every model config shares (an object, an optional `kind` from a fixed list, positive
 * integer size fields), so the Transformer, RNN and Seq2Seq validators reject bad input with the
 * same messages and none of them can drift. TensorFlow.js-free, like the config modules using it.
 */
import { ValidationError } from "../errors.js";

/** Largest accepted size field (2^20): far above any model this code can train, below overflow. */
const MAX_FIELD = 1 << 20;

/**
 * Checks an untrusted config (CLI flags, checkpoint JSON): an object whose `fields` are integers
 * in [1, 2^20] and, when `kinds` is given, whose `kind` is one of them. Returns a fresh object
 * with `kind` (if checked) and then `fields` in the order given, so JSON written from it (as every
 * checkpoint is) lists them in a fixed order. Throws ValidationError naming `config.<field>`.
 */
export function validateConfigFields<F extends string>(
  value: unknown,
  fields: readonly F[],
): Record<F, number>;
export function validateConfigFields<F extends string, K extends string>(
  value: unknown,
  fields: readonly F[],
  kinds: readonly K[],
): { kind: K } & Record<F, number>;
export function validateConfigFields<F extends string, K extends string>(
  value: unknown,
  fields: readonly F[],
  kinds?: readonly K[],
): Record<string, unknown> {
  if (typeof value !== "object" || value === null) throw new ValidationError("config", "must be an object");
  const v = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  if (kinds !== undefined) {
    if (!kinds.includes(v.kind as K)) {
      const allowed = kinds.map((k) => JSON.stringify(k)).join(" or ");
      throw new ValidationError("config.kind", `must be ${allowed}, got ${JSON.stringify(v.kind)}`);
    }
    out.kind = v.kind;
  }
  for (const f of fields) {
    const x = v[f];
    if (typeof x !== "number" || !Number.isInteger(x) || x < 1 || x > MAX_FIELD) {
      throw new ValidationError(`config.${f}`, `must be a positive integer, got ${JSON.stringify(x)}`);
    }
    out[f] = x;
  }
  return out;
}
