/**
 * Server-side gRPC call time by method and status code (rlaif_rpc_server_duration_seconds), hooked
 * into the adapter (grpc/adapter.ts) with one call per method kind. Why at the adapter: every
 * service's handlers go through it, so one hook covers the whole API, including calls refused
 * before the handler ran (INVALID_ARGUMENT, DEADLINE_EXCEEDED on arrival).
 */
import * as grpc from "@grpc/grpc-js";
import { histogram } from "./metrics.js";

/** The status code's name as a label value ("OK", "INVALID_ARGUMENT", …). */
function codeName(code: number | undefined): string {
  return grpc.status[code ?? grpc.status.UNKNOWN] ?? String(code);
}

function timer(method: string): (code: number | undefined) => void {
  const t0 = performance.now();
  let done = false;
  return (code) => {
    if (done) return;
    done = true;
    histogram("rpcDuration").observe({ method, code: codeName(code) }, (performance.now() - t0) / 1000);
  };
}

/** A unary call's callback that records the call's time and code when it answers. */
export function timedUnary<T>(method: string, callback: grpc.sendUnaryData<T>): grpc.sendUnaryData<T> {
  const stop = timer(method);
  return (err, value, ...rest) => {
    stop(err ? (err.code ?? grpc.status.UNKNOWN) : grpc.status.OK);
    callback(err, value, ...rest);
  };
}

/** Record a server-streaming call's time and code when it ends (OK, or the status it failed with). */
export function timeStream(method: string, call: grpc.ServerWritableStream<unknown, unknown>): void {
  const stop = timer(method);
  let failed: number | undefined;
  call.once("error", (err: Partial<grpc.StatusObject>) => {
    failed = err.code ?? grpc.status.UNKNOWN;
  });
  call.once("finish", () => stop(failed ?? grpc.status.OK));
  call.once("close", () => stop(failed ?? grpc.status.CANCELLED));
}
