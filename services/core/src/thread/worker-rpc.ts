/**
 * Calls across a thread boundary: a service part that computes in a `worker_threads` worker (the
 * embedded Policy, the Optimizer's learner) is driven by request/reply messages on a port. Why its
 * own module: JavaScript and the tfjs-wasm backend are single-threaded, so the only way to a
 * second core is another thread, and every such thread needs the same three things — a way to
 * start a TypeScript module as a worker, calls with replies, and errors that keep their class.
 */
import { type MessagePort, type Transferable, Worker } from "node:worker_threads";
import * as errors from "../errors.js";
import { RlaifError, ValidationError, WorkerThreadError } from "../errors.js";

/** An error as it crosses a port: its class name, message and, for a ValidationError, its field. */
export interface WireError {
  name: string;
  message: string;
  field?: string;
  reason?: string;
}

/** What goes over the wire for `err`. */
export function errorToWire(err: unknown): WireError {
  const e = err instanceof Error ? err : new Error(String(err));
  if (e instanceof ValidationError)
    return { name: e.name, message: e.message, field: e.field, reason: e.reason };
  return { name: e.name, message: e.message };
}

/**
 * The error of errors.ts that `w` names, so callers on this side branch on `instanceof` exactly as
 * they would in-process; any other arrives as an RlaifError with the same message.
 */
export function errorFromWire(w: WireError): Error {
  if (w.name === "ValidationError" && w.field !== undefined)
    return new ValidationError(w.field, w.reason ?? "");
  const Class = (errors as Record<string, unknown>)[w.name];
  if (typeof Class === "function" && Class.prototype instanceof RlaifError && Class !== ValidationError) {
    return new (Class as new (m: string) => Error)(w.message);
  }
  return new RlaifError(w.message);
}

/**
 * Start `entry` (a TypeScript module) in a worker thread. The project runs TypeScript through
 * tsx, whose loader a worker thread does not inherit in Node 20, so the thread registers it before
 * importing the entry module.
 */
export function startModuleWorker(
  entry: URL,
  workerData: unknown,
  transferList: Transferable[] = [],
): Worker {
  const tsx = import.meta.resolve("tsx/esm/api");
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(boot, { eval: true, workerData, transferList });
}

/** A reply on the port: a call's value (with what to transfer) or its error. */
type Reply = { id: number; value: unknown } | { id: number; error: WireError };

/** Handlers of {@link serveCalls}: each returns the value, and optionally the buffers to move with it. */
export type CallHandlers = Record<
  string,
  (arg: never) => Promise<{ value: unknown; transfer?: ArrayBuffer[] } | undefined>
>;

/**
 * Answer {@link CallClient} calls arriving on `port` with `handlers`, one at a time in arrival
 * order (a learner's step, its weights and its checkpoint must not interleave). Returns a function
 * that stops answering.
 */
export function serveCalls(port: MessagePort, handlers: CallHandlers): () => void {
  let chain = Promise.resolve();
  const onMessage = (req: { id: number; op: string; arg: unknown }) => {
    chain = chain.then(async () => {
      const handler = handlers[req.op] as ((arg: unknown) => ReturnType<CallHandlers[string]>) | undefined;
      try {
        if (!handler) throw new RlaifError(`no such call across the thread: ${req.op}`);
        const out = await handler(req.arg);
        port.postMessage({ id: req.id, value: out?.value } satisfies Reply, out?.transfer ?? []);
      } catch (err) {
        port.postMessage({ id: req.id, error: errorToWire(err) } satisfies Reply);
      }
    });
  };
  port.on("message", onMessage);
  return () => port.off("message", onMessage);
}

/** The calling side of {@link serveCalls}: request/reply over a port, with typed errors back. */
export class CallClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;

  constructor(private readonly port: MessagePort | Worker) {
    port.on("message", (reply: Reply) => {
      if (typeof reply !== "object" || reply === null || !("id" in reply)) return;
      const call = this.pending.get(reply.id);
      if (!call) return;
      this.pending.delete(reply.id);
      if ("error" in reply) call.reject(errorFromWire(reply.error));
      else call.resolve(reply.value);
    });
  }

  /** Call `op` with `arg` (moving the `transfer` buffers); rejects once {@link fail} was called. */
  call<T>(op: string, arg?: unknown, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.port.postMessage({ id, op, arg }, transfer);
    });
  }

  /** The other side is gone: every waiting and later call rejects with `err`. */
  fail(err: Error): void {
    this.failure ??= err;
    for (const call of this.pending.values()) call.reject(this.failure);
    this.pending.clear();
  }
}

/** The error a thread's unexpected exit gives those waiting on it (`what`: "Policy", "learner"). */
export function threadExited(what: string, code: number): WorkerThreadError {
  return new WorkerThreadError(`the ${what} thread exited with code ${code}`);
}

/** The error an uncaught error in a thread gives those waiting on it. */
export function threadFailed(what: string, err: Error): WorkerThreadError {
  return new WorkerThreadError(`the ${what} thread failed: ${err.message}`, { cause: err });
}
