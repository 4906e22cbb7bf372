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

/**
 * A model's tokenizer files cannot be used: missing or unreadable, inconsistent with each other,
 * or using a tokenizer.json feature this code does not support. The message names the file and
 * field, so a user knows what to fix before any weights are read.
 */
export class TokenizerError extends RlaifError {}

/** A weights version cannot be accepted (tampered, older than the current one, wrong shapes). */
export class WeightsError extends RlaifError {}

/** A peer service (Policy, Feedback) failed or timed out after retries. */
export class PeerError extends RlaifError {}

/**
 * The Feedback service did not answer a Score call within its own deadline (`feedbackTimeoutMs`,
 * well below the Policy's): a hung scorer. Distinct so the Rollout worker gives the job back at
 * once and counts it, instead of spending its retry budget waiting on the same scorer.
 */
export class ScorerTimeoutError extends PeerError {}

/**
 * The Feedback service stayed unreachable (UNAVAILABLE and the like: down, restarting) for the
 * Rollout's whole retry budget of one job. Distinct so the Rollout worker gives the job back for
 * redelivery at once (its Score calls were already retried) instead of resampling it.
 */
export class ScorerUnavailableError extends PeerError {}

/**
 * A scorer's answer breaks the feedback contract (the wrong number of scores, a NaN or infinite
 * reward, per-token rewards of the wrong length, an idempotency key echoed out of order), with
 * the scorer named in the message: which of several services misbehaves is the first thing to
 * know. The Rollout fails the call's items with it (excluded, counted) instead of retrying: a
 * deterministic scorer bug answers the same every time.
 */
export class ScorerResponseError extends ValidationError {
  constructor(
    readonly scorer: string,
    field: string,
    reason: string,
  ) {
    super(field, reason);
    this.message = `scorer ${scorer} answered badly: ${field}: ${reason}`;
  }
}

/**
 * The Policy still serves weights older than a rollout job allows. Distinct so the Rollout worker
 * naks the job for a later retry (after the replica swaps) instead of failing it.
 */
export class StaleWeightsError extends RlaifError {}

/**
 * A service's worker thread (an embedded run's Policy, the Optimizer's learner) could not start or
 * stopped unexpectedly; the message carries the thread's own error, so the cause is not hidden
 * behind the retries or timeouts of whoever was waiting on it.
 */
export class WorkerThreadError extends RlaifError {}

/** A training run failed (timeout waiting for trajectories, a peer gone, cancelled); the message says why. */
export class RunFailedError extends RlaifError {}

/**
 * A thing the caller named (a run, a checkpoint, a weights version) does not exist. A distinct
 * class so the gRPC layer can answer NOT_FOUND instead of INTERNAL and callers know not to retry.
 */
export class NotFoundError extends RlaifError {}

/**
 * The system is not in a state where the call can run (a run is already active, the run is not
 * paused). The gRPC layer answers FAILED_PRECONDITION: retrying unchanged will not help until the
 * state changes.
 */
export class PreconditionError extends RlaifError {}

/**
 * A run was stopped by CancelRun (or its controller shutting down). Distinct from a failure so the
 * run ends CANCELLED, not FAILED, and keeps its last completed step's checkpoint.
 */
export class RunCancelledError extends RlaifError {}

/**
 * A server is too busy to take the call now (a Policy replica's queue of rows is full). The gRPC
 * layer answers RESOURCE_EXHAUSTED, which callers retry later or send to another replica.
 */
export class OverloadedError extends RlaifError {}

// Supervision (`rlaif up`) and clean shutdown.

/**
 * A supervised service process kept exiting: more restarts within a minute than the cap allows.
 * Distinct so `rlaif up` stops with a message naming the service instead of restarting forever.
 */
export class ServiceFailedError extends RlaifError {
  readonly service: string;
  constructor(service: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.service = service;
  }
}

/**
 * A command was stopped by SIGINT or SIGTERM after it had stopped everything it started. It
 * carries the exit status the shell convention gives (128 + signal number: 130, 143), so scripts
 * and supervisors can tell a requested stop from a failure (1) or a usage error (2).
 */
export class StoppedBySignalError extends RlaifError {
  readonly signal: "SIGINT" | "SIGTERM";
  readonly exitCode: number;
  constructor(signal: "SIGINT" | "SIGTERM", message: string) {
    super(message);
    this.signal = signal;
    this.exitCode = signal === "SIGINT" ? 130 : 143;
  }
}

/**
 * A gRPC call failed with a status. Carries the numeric status `code` (grpc-js `status` enum) and
 * the server's `details`, so callers branch on the code (retry UNAVAILABLE, never retry
 * INVALID_ARGUMENT) instead of parsing messages. A handler may also throw one to answer with an
 * exact status.
 */
export class RpcError extends RlaifError {
  readonly code: number;
  readonly details: string;
  readonly metadata: Readonly<Record<string, string>>;
  constructor(
    code: number,
    details: string,
    options?: { cause?: unknown; metadata?: Readonly<Record<string, string>>; method?: string },
  ) {
    super(`${options?.method ? `${options.method}: ` : ""}${rpcCodeName(code)}: ${details}`, options);
    this.code = code;
    this.details = details;
    this.metadata = options?.metadata ?? {};
  }
}

const RPC_CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** The canonical name of a gRPC status code (e.g. 14 → "UNAVAILABLE"), for messages and logs. */
export function rpcCodeName(code: number): string {
  return RPC_CODE_NAMES[code] ?? `CODE_${code}`;
}

/**
 * How the error of a dead-lettered job's samples begins (Trajectory.error). The Rollout writes it
 * and the Optimizer counts it (StepMetrics.dead_lettered), so both spell it from here.
 */
export const DEAD_LETTERED = "dead-lettered";

/**
 * Marks the error of a sample the Rollout did not send to its scorer because that scorer's circuit
 * breaker is open, so the Optimizer can tell "no scorer is left" from ordinary scorer errors.
 */
export const CIRCUIT_OPEN = "circuit open";

/**
 * The message bus (NATS) stayed unreachable past an operation's retry deadline. The message names
 * the server and the operation; the connection itself keeps reconnecting, so a later call may work.
 */
export class BusUnavailableError extends RlaifError {}
