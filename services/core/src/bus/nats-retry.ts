/**
 * Riding out a NATS outage: which failures a reconnect can cure, and a retry loop bounded by a
 * deadline for the bus operations `NatsBus` and `NatsQueue` make.
 *
 * Why here and not in every caller: the connection reconnects forever on its own, so an operation
 * that fails while it is down (a request rejected as "connection disconnected", timed out, or
 * answered "no responders" while JetStream recovers its streams) succeeds once it is back. Every
 * bus operation is safe to repeat (publishes carry `Nats-Msg-Id`, acks and reads are idempotent,
 * compare-and-set is checked by the caller), so the bus retries them itself and callers only see
 * a failure when the server stayed away past the deadline: a `BusUnavailableError` naming the
 * server and the operation.
 */

import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { BusUnavailableError } from "../errors.js";

/** Default time a bus operation keeps retrying across a disconnect (a nats-server restart). */
export const DEFAULT_NATS_RETRY_MS = 30_000;

/** Names of the NATS client's errors that a reconnect (or JetStream finishing its recovery) cures. */
const TRANSIENT_NAMES = new Set([
  "RequestError", // "connection disconnected": the request or flush was cut by the disconnect
  "TimeoutError", // the request went out (or was buffered) while the server was away
  "NoResponders", // JetStream has not registered its API yet after a restart
  "ConnectionError",
  "JetStreamNotEnabled", // the client's reading of "no responders" on the JetStream API
]);

/** JetStream API answers that mean "not now" rather than "no". */
const TRANSIENT_API_CODES = new Set<number>([
  JetStreamApiCodes.JetStreamNotEnabledForAccount, // while the restarted server enables JetStream
  10008, // JetStream system temporarily unavailable (recovering its streams)
]);

/**
 * True when `err` comes from the connection being down or JetStream not being ready yet, so the
 * same operation may succeed after the reconnect. A closed connection (`close()` was called) is
 * not transient: nothing will reconnect it.
 */
export function isTransientNatsError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = apiCode(err);
  if (code !== undefined) return TRANSIENT_API_CODES.has(code);
  if (TRANSIENT_NAMES.has(err.name)) return true;
  return /disconnected|timeout|no responders/i.test(err.message) && !/closed/i.test(err.message);
}

/** The JetStream API error code of `err`, if it is one. */
export function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
}

/** Where and how long `retryTransient` retries. */
export interface RetryContext {
  /** The server's address, for the error and the log (e.g. `nats://127.0.0.1:4222`). */
  server: string;
  /** Give up (with `BusUnavailableError`) once this long has passed since the first attempt. */
  retryMs: number;
  /** True once the bus is closed: stop retrying at once. */
  closed: () => boolean;
}

/**
 * Run `op`, and while it fails with a transient error (see `isTransientNatsError`) run it again
 * with backoff (100 ms doubling to 2 s) until `ctx.retryMs` has passed; then throw
 * `BusUnavailableError` naming `what` and the server, with the last failure as its cause. Other
 * errors pass through unchanged on the attempt that raised them.
 */
export async function retryTransient<T>(what: string, ctx: RetryContext, op: () => Promise<T>): Promise<T> {
  const deadline = performance.now() + ctx.retryMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (!isTransientNatsError(err) || ctx.closed()) throw err;
      const wait = Math.min(2_000, 100 * 2 ** Math.min(attempt, 5));
      if (performance.now() + wait > deadline) {
        throw new BusUnavailableError(
          `NATS at ${ctx.server}: ${what} did not succeed within ${ctx.retryMs} ms: ${(err as Error).message}`,
          { cause: err },
        );
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}
