/**
 * The read side of a bus across a thread boundary (a `worker_threads` MessagePort), so a service
 * run in a worker thread can follow a bus that lives in the main thread — the embedded bus is
 * in-memory, so a second thread cannot reach it any other way.
 *
 * Only what a Policy replica reads is bridged: KV `get` and `watch` (the latest-weights pointer)
 * and Object Store `get` and `info` (the weights blobs). Writes and queues are refused with a
 * clear error: the main thread stays the only writer. Blobs cross as transferred ArrayBuffers
 * (moved, not copied), and the error classes of errors.ts survive the crossing, so callers branch
 * on them exactly as they do in-process.
 *
 * A watched entry can carry the objects its watcher reads next (`sendWithEntry`): the serving
 * thread may be busy for a long while right after it writes the entry (the Optimizer's update
 * runs synchronously), and a round trip for the blob would then let requests reach the Policy
 * before the weights they must be served with.
 */
import type { MessagePort } from "node:worker_threads";
import { RlaifError } from "../errors.js";
import { errorFromWire, errorToWire, type WireError } from "../thread/worker-rpc.js";
import type { Bus, KeyValue, KvEntry, ObjectInfo, ObjectStore, Queue } from "./bus.js";

type Request =
  | { id: number; op: "kv.get"; key: string }
  | { id: number; op: "kv.watch"; key: string }
  | { id: number; op: "kv.unwatch"; watch: number }
  | { id: number; op: "objects.get"; name: string }
  | { id: number; op: "objects.info"; name: string };

type Call = Request extends infer R ? (R extends Request ? Omit<R, "id"> : never) : never;

/** Objects sent with a watched entry: every name it reads, the bytes of those not sent before. */
interface Sent {
  names: string[];
  objects: { name: string; data: Uint8Array }[];
}

type Reply =
  | { id: number; value: unknown }
  | { id: number; error: WireError }
  | { watch: number; entry: KvEntry; sent: Sent };

/** Options of {@link serveBusOverPort}. */
export interface ServeOptions {
  /** Names of the objects a watcher of `key` reads after seeing `value`, sent along with it. */
  sendWithEntry?: (key: string, value: Uint8Array) => string[];
}

/** The bytes of `data` in an ArrayBuffer of their own, so it can be transferred. */
function owned(data: Uint8Array): Uint8Array {
  return data.byteOffset === 0 &&
    data.byteLength === data.buffer.byteLength &&
    data.buffer instanceof ArrayBuffer
    ? data
    : data.slice();
}

/**
 * Answer a {@link PortBus}'s requests on `port` from `bus`. Returns a function that stops serving
 * and ends every watch it opened (the port itself is the caller's to close).
 */
export function serveBusOverPort(bus: Bus, port: MessagePort, opts: ServeOptions = {}): () => void {
  const watches = new Map<number, () => void>();
  let stopped = false;
  /** One watch's entries, in order, each with the objects it names (those not sent before). */
  const forward = (watch: number) => {
    let chain = Promise.resolve();
    let before = new Set<string>();
    return (entry: KvEntry) => {
      chain = chain.then(async () => {
        const names = opts.sendWithEntry?.(entry.key, entry.value) ?? [];
        const sent: Sent = { names, objects: [] };
        for (const name of new Set(names)) {
          if (before.has(name)) continue;
          // An object that cannot be read is left to the watcher's own get, which reports why.
          const data = await (await bus.objects()).get(name).catch(() => null);
          if (data) sent.objects.push({ name, data: owned(data) });
        }
        before = new Set(names.filter((n) => before.has(n) || sent.objects.some((o) => o.name === n)));
        if (stopped) return;
        const transfer = sent.objects.map((o) => o.data.buffer as ArrayBuffer);
        port.postMessage({ watch, entry, sent } satisfies Reply, transfer);
      });
    };
  };
  const answer = async (req: Request): Promise<Reply> => {
    switch (req.op) {
      case "kv.get":
        return { id: req.id, value: await (await bus.kv()).get(req.key) };
      case "kv.watch": {
        const stop = await (await bus.kv()).watch(req.key, forward(req.id));
        if (stopped) stop();
        else watches.set(req.id, stop);
        return { id: req.id, value: null };
      }
      case "kv.unwatch":
        watches.get(req.watch)?.();
        watches.delete(req.watch);
        return { id: req.id, value: null };
      case "objects.get":
        return { id: req.id, value: owned(await (await bus.objects()).get(req.name)) };
      case "objects.info":
        return { id: req.id, value: await (await bus.objects()).info(req.name) };
    }
  };
  const onMessage = (req: Request) => {
    answer(req).then(
      (reply) => {
        if (stopped) return;
        const value = "value" in reply ? reply.value : null;
        port.postMessage(reply, value instanceof Uint8Array ? [value.buffer as ArrayBuffer] : []);
      },
      (err: unknown) => {
        if (!stopped) port.postMessage({ id: req.id, error: errorToWire(err) } satisfies Reply);
      },
    );
  };
  port.on("message", onMessage);
  return () => {
    stopped = true;
    port.off("message", onMessage);
    for (const stop of watches.values()) stop();
    watches.clear();
  };
}

/**
 * The worker thread's view of a bus served by {@link serveBusOverPort}: KV reads and watches,
 * Object Store reads. Everything else throws, naming what is not bridged.
 */
export class PortBus implements Bus {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly watchers = new Map<number, (entry: KvEntry) => void>();
  /** Objects sent with the latest watched entry, until read (older ones are dropped). */
  private sent = new Map<string, Uint8Array>();
  private closed = false;

  constructor(private readonly port: MessagePort) {
    port.on("message", (reply: Reply) => {
      if ("watch" in reply) {
        const keep = new Set(reply.sent.names);
        this.sent = new Map([...this.sent].filter(([name]) => keep.has(name)));
        for (const o of reply.sent.objects) this.sent.set(o.name, o.data);
        this.watchers.get(reply.watch)?.(reply.entry);
        return;
      }
      const call = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if ("error" in reply) call?.reject(errorFromWire(reply.error));
      else call?.resolve(reply.value);
    });
  }

  private call<T>(req: Call, id = this.nextId++): Promise<T> {
    if (this.closed) return Promise.reject(new RlaifError("bus is closed"));
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.port.postMessage({ ...req, id });
    });
  }

  private refuse(what: string): never {
    throw new RlaifError(`${what} is not available across the thread bridge: only the main thread writes`);
  }

  async queue(name: string): Promise<Queue> {
    return this.refuse(`queue "${name}"`);
  }

  async kv(): Promise<KeyValue> {
    return {
      get: (key) => this.call<KvEntry | null>({ op: "kv.get", key }),
      put: async () => this.refuse("kv put"),
      update: async () => this.refuse("kv update"),
      watch: async (key, onChange) => {
        // The watch's id is its request's: entries for it may arrive before the reply does.
        const id = this.nextId++;
        this.watchers.set(id, onChange);
        await this.call({ op: "kv.watch", key }, id).catch((err: unknown) => {
          this.watchers.delete(id);
          throw err;
        });
        return () => {
          this.watchers.delete(id);
          if (!this.closed) this.call({ op: "kv.unwatch", watch: id }).catch(() => undefined);
        };
      },
    };
  }

  async objects(): Promise<ObjectStore> {
    const get = (name: string): Promise<Uint8Array> => {
      const data = this.sent.get(name);
      if (!data) return this.call<Uint8Array>({ op: "objects.get", name });
      // Each sent object is handed out once: the caller owns its bytes.
      this.sent.delete(name);
      return Promise.resolve(data);
    };
    return {
      get,
      // Objects cross the bridge whole (one transfer), so the stream is that one chunk.
      getStream: async function* (name: string) {
        yield await get(name);
      },
      info: (name) => this.call<ObjectInfo | null>({ op: "objects.info", name }),
      put: async () => this.refuse("objects put"),
      putStream: async () => this.refuse("objects put"),
      delete: async () => this.refuse("objects delete"),
      list: async () => this.refuse("objects list"),
    };
  }

  /** Fails the calls still waiting and stops delivering watches; the port stays open. */
  async close(): Promise<void> {
    this.closed = true;
    this.watchers.clear();
    this.sent.clear();
    for (const call of this.pending.values()) call.reject(new RlaifError("bus is closed"));
    this.pending.clear();
  }
}
