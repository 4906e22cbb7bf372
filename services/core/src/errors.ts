/**
 * Every typed error the project throws, in one place.
 *
 * Callers branch on `instanceof` (or `name`, across process boundaries) instead of parsing
 * messages; each error keeps the underlying failure in `cause`.
 */

/** Base class: sets `name` to the concrete class name so logs and `toString` say what failed. */
export class RlaifError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request or config field is missing or out of range. `field` is its path (e.g. `prompts[2]`). */
export class ValidationError extends RlaifError {
  readonly field: string;
  readonly reason: string;
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.field = field;
    this.reason = reason;
  }
}

/** A config file or command-line flag cannot be used; the message says what to fix. */
export class ConfigError extends RlaifError {}

/** A stored object's content does not match the SHA-256 recorded when it was written. */
export class ObjectIntegrityError extends RlaifError {}

/** A stored object does not exist. */
export class ObjectNotFoundError extends RlaifError {}

/** A KV compare-and-set lost against a concurrent writer. */
export class KvConflictError extends RlaifError {}

/** A checkpoint cannot be read or written (missing file, bad header, shape mismatch). */
export class CheckpointError extends RlaifError {}

/** A weights version cannot be accepted (tampered, older than the current one, wrong shapes). */
export class WeightsError extends RlaifError {}

/** A peer service (Policy, Feedback) failed or timed out after retries. */
export class PeerError extends RlaifError {}
