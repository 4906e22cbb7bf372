/**
 * The one place where a handler's failure becomes a gRPC status. Every service answers the same
 * way for the same kind of failure, so callers can branch on the code: retry UNAVAILABLE, fix
 * the request on INVALID_ARGUMENT, wait on FAILED_PRECONDITION.
 */
import { status } from "@grpc/grpc-js";
import {
  ConfigError,
  KvConflictError,
  NotFoundError,
  ObjectIntegrityError,
  ObjectNotFoundError,
  OverloadedError,
  PeerError,
  PreconditionError,
  RlaifError,
  RpcError,
  ValidationError,
  WeightsError,
} from "../errors.js";

/** A status to send, and whether it reveals a bug worth logging on the server. */
export interface MappedStatus {
  readonly code: status;
  readonly details: string;
  /** True for INTERNAL: an unexpected failure the operator should see in the server's log. */
  readonly unexpected: boolean;
}

/** What the adapter knows about the call when the handler failed. */
export interface FailureContext {
  /** The call's deadline has passed. */
  readonly deadlineExceeded: boolean;
  /** The client cancelled the call (or the server is shutting down). */
  readonly cancelled: boolean;
}

/**
 * Map a thrown value to a status:
 * - ValidationError → INVALID_ARGUMENT, details "<field>: <reason>".
 * - ConfigError → INVALID_ARGUMENT: over the API a config always comes from the caller (a
 *   server's own config is checked at start-up, before it serves), so the caller must fix it.
 * - NotFoundError, ObjectNotFoundError → NOT_FOUND.
 * - PreconditionError (e.g. a run is already active), WeightsError → FAILED_PRECONDITION.
 * - KvConflictError → ABORTED (a concurrent writer won; retry the whole read-modify-write).
 * - PeerError → UNAVAILABLE (a downstream service failed; the caller may retry later).
 * - OverloadedError → RESOURCE_EXHAUSTED (too busy now: retry later or elsewhere).
 * - ObjectIntegrityError → DATA_LOSS.
 * - RpcError thrown by a handler → its own code and details, unchanged.
 * - Anything (typically an AbortError) once the deadline passed → DEADLINE_EXCEEDED; once the
 *   client cancelled → CANCELLED. Checked first: the transport has answered already.
 * - Any other error (CheckpointError included) → INTERNAL with its message (flagged for logging).
 */
export function toStatus(err: unknown, ctx: FailureContext): MappedStatus {
  const expected = (code: status, details: string): MappedStatus => ({ code, details, unexpected: false });
  // Once the deadline passed or the client left, grpc-js has already answered; whatever the
  // handler threw on its way out (usually an abort) is a consequence, not a bug.
  if (ctx.deadlineExceeded) return expected(status.DEADLINE_EXCEEDED, "deadline exceeded");
  if (ctx.cancelled) return expected(status.CANCELLED, "cancelled by the client");
  if (err instanceof RpcError) return expected(err.code, err.details);
  if (err instanceof ValidationError) return expected(status.INVALID_ARGUMENT, `${err.field}: ${err.reason}`);
  if (err instanceof ConfigError) return expected(status.INVALID_ARGUMENT, err.message);
  if (err instanceof NotFoundError || err instanceof ObjectNotFoundError)
    return expected(status.NOT_FOUND, err.message);
  if (err instanceof PreconditionError || err instanceof WeightsError) {
    return expected(status.FAILED_PRECONDITION, err.message);
  }
  if (err instanceof KvConflictError) return expected(status.ABORTED, err.message);
  if (err instanceof PeerError) return expected(status.UNAVAILABLE, err.message);
  if (err instanceof OverloadedError) return expected(status.RESOURCE_EXHAUSTED, err.message);
  if (err instanceof ObjectIntegrityError) return expected(status.DATA_LOSS, err.message);
  const details =
    err instanceof RlaifError
      ? `${err.name}: ${err.message}`
      : err instanceof Error
        ? err.message
        : String(err);
  return { code: status.INTERNAL, details, unexpected: true };
}
