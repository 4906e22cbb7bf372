/**
 * The embedded bus: every service in one process, no NATS server needed.
 *
 * `rlaif train` without a NATS URL runs over this. It passes the same contract suite as `NatsBus`
 * (test/bus-contract.test.ts), so code tested embedded behaves the same when distributed.
 */

import {
  KvConflictError,
  ObjectIntegrityError,
  ObjectNotFoundError,
  RlaifError,
  ValidationError,
} from "../errors.js";
import { sha256Hex } from "../hash.js";
import type {
  Bus,
  ChunkSource,
  KeyValue,
  KvEntry,
  ObjectInfo,
  ObjectStore,
  Queue,
  QueueName,
} from "./bus.js";
import { MemoryQueue } from "./memory-queue.js";
import { assertKvKey } from "./subjects.js";

/** JetStream's default duplicate window (2 min); the memory bus dedups over the same span. */
export const DEFAULT_DEDUP_WINDOW_MS = 120_000;
/** JetStream's default consumer ack wait (30 s): an un-acked message is redelivered after it. */
export const DEFAULT_ACK_WAIT_MS = 30_000;

/** Options of `MemoryBus`; tests shorten the timings, production keeps JetStream's defaults. */
export interface MemoryBusOptions {
  /** Redeliver a message not acked or nakked within this time. Default 30 s. */
  ackWaitMs?: number;
  /** Drop a publish whose msgId was seen within this time. Default 2 min. */
  dedupWindowMs?: number;
}

/** In-process `Bus`: queues, object store and KV shared by every service holding this instance. */
export class MemoryBus implements Bus {
  readonly #queues = new Map<QueueName, MemoryQueue>();
  readonly #objects = new MemoryObjectStore();
  readonly #kv = new MemoryKeyValue();
  readonly #ackWaitMs: number;
  readonly #dedupWindowMs: number;
  #closed = false;

  constructor(opts: MemoryBusOptions = {}) {
    this.#ackWaitMs = positive("ackWaitMs", opts.ackWaitMs ?? DEFAULT_ACK_WAIT_MS);
    this.#dedupWindowMs = positive("dedupWindowMs", opts.dedupWindowMs ?? DEFAULT_DEDUP_WINDOW_MS);
  }

  async queue(name: QueueName): Promise<Queue> {
    this.#assertOpen();
    let queue = this.#queues.get(name);
    if (!queue) {
      queue = new MemoryQueue(name, { ackWaitMs: this.#ackWaitMs, dedupWindowMs: this.#dedupWindowMs });
      this.#queues.set(name, queue);
    }
    return queue;
  }

  async objects(): Promise<ObjectStore> {
    this.#assertOpen();
    return this.#objects;
  }

  async kv(): Promise<KeyValue> {
    this.#assertOpen();
    return this.#kv;
  }

  /** Clears every timer and watcher, so nothing of the bus outlives it. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const queue of this.#queues.values()) queue.close();
    this.#kv.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new RlaifError("bus is closed");
  }
}

/** Chunk size of the memory store's streamed reads: the JetStream Object Store's default. */
const MEMORY_CHUNK_BYTES = 128 * 1024;

/**
 * Object store in memory. Content is copied in and out and re-hashed on every get, so a caller
 * mutating its buffer (or `corruptForTest`) is caught exactly like a corrupt JetStream object.
 */
export class MemoryObjectStore implements ObjectStore {
  readonly #objects = new Map<string, { data: Uint8Array; sha256: string }>();

  async put(name: string, data: Uint8Array): Promise<ObjectInfo> {
    if (!name) throw new ValidationError("name", "object name must be non-empty");
    const copy = data.slice();
    const sha256 = sha256Hex(copy);
    this.#objects.set(name, { data: copy, sha256 });
    return { name, size: copy.length, sha256 };
  }

  /** The chunks are joined into the stored copy (memory holds objects whole anyway). */
  async putStream(name: string, source: ChunkSource): Promise<ObjectInfo> {
    if (!name) throw new ValidationError("name", "object name must be non-empty");
    const parts: Uint8Array[] = [];
    for await (const chunk of source()) parts.push(chunk.slice());
    const copy = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      copy.set(p, at);
      at += p.length;
    }
    this.#objects.set(name, { data: copy, sha256: sha256Hex(copy) });
    return { name, size: copy.length, sha256: sha256Hex(copy) };
  }

  /**
   * The stored copy in chunks of {@link MEMORY_CHUNK_BYTES} (as JetStream would send them), each
   * a fresh copy; the digest is checked after the last chunk, as on JetStream.
   */
  async *getStream(name: string): AsyncIterable<Uint8Array> {
    const obj = this.#objects.get(name);
    if (!obj) throw new ObjectNotFoundError(`object "${name}" not found`);
    const data = obj.data.slice();
    for (let p = 0; p < data.length; p += MEMORY_CHUNK_BYTES) {
      yield data.slice(p, Math.min(data.length, p + MEMORY_CHUNK_BYTES));
    }
    const actual = sha256Hex(data);
    if (actual !== obj.sha256) {
      throw new ObjectIntegrityError(
        `object "${name}": SHA-256 ${actual} does not match recorded ${obj.sha256}`,
      );
    }
  }

  async get(name: string): Promise<Uint8Array> {
    const obj = this.#objects.get(name);
    if (!obj) throw new ObjectNotFoundError(`object "${name}" not found`);
    const actual = sha256Hex(obj.data);
    if (actual !== obj.sha256) {
      throw new ObjectIntegrityError(
        `object "${name}": SHA-256 ${actual} does not match recorded ${obj.sha256}`,
      );
    }
    return obj.data.slice();
  }

  async info(name: string): Promise<ObjectInfo | null> {
    const obj = this.#objects.get(name);
    return obj ? { name, size: obj.data.length, sha256: obj.sha256 } : null;
  }

  async list(): Promise<ObjectInfo[]> {
    return [...this.#objects].map(([name, obj]) => ({ name, size: obj.data.length, sha256: obj.sha256 }));
  }

  /** Deleting an absent object is a no-op, as on JetStream. */
  async delete(name: string): Promise<void> {
    this.#objects.delete(name);
  }

  /** Test hook: flip one stored byte without updating the digest, to exercise integrity checks. */
  corruptForTest(name: string): void {
    const obj = this.#objects.get(name);
    if (!obj || obj.data.length === 0) throw new ObjectNotFoundError(`object "${name}" not found or empty`);
    obj.data[0] = (obj.data[0] as number) ^ 0xff;
  }
}

type Watcher = (entry: KvEntry) => void;

/**
 * KV in memory with one revision counter per bucket (like a JetStream stream sequence), CAS by
 * revision, and watchers notified asynchronously in write order.
 */
export class MemoryKeyValue implements KeyValue {
  #revision = 0;
  readonly #entries = new Map<string, { value: Uint8Array; revision: number }>();
  readonly #watchers = new Map<string, Set<Watcher>>();

  async get(key: string): Promise<KvEntry | null> {
    assertKvKey(key);
    const entry = this.#entries.get(key);
    return entry ? { key, value: entry.value.slice(), revision: entry.revision } : null;
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    assertKvKey(key);
    return this.#write(key, value);
  }

  async update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    assertKvKey(key);
    if (!Number.isInteger(expectedRevision) || expectedRevision < 0) {
      throw new ValidationError("expectedRevision", `${expectedRevision} must be a non-negative integer`);
    }
    const current = this.#entries.get(key)?.revision ?? 0;
    if (current !== expectedRevision) {
      throw new KvConflictError(`kv key "${key}": expected revision ${expectedRevision}, found ${current}`);
    }
    return this.#write(key, value);
  }

  async watch(key: string, onChange: (entry: KvEntry) => void): Promise<() => void> {
    assertKvKey(key);
    let set = this.#watchers.get(key);
    if (!set) {
      set = new Set();
      this.#watchers.set(key, set);
    }
    const watcher: Watcher = (entry) => onChange(entry);
    set.add(watcher);
    const initial = this.#entries.get(key);
    if (initial) this.#notify(watcher, { key, value: initial.value, revision: initial.revision });
    return () => {
      set.delete(watcher);
    };
  }

  /** Drop every watcher (pending notifications are skipped). */
  close(): void {
    for (const set of this.#watchers.values()) set.clear();
  }

  #write(key: string, value: Uint8Array): number {
    const revision = ++this.#revision;
    const copy = value.slice();
    this.#entries.set(key, { value: copy, revision });
    for (const watcher of this.#watchers.get(key) ?? [])
      this.#notify(watcher, { key, value: copy, revision });
    return revision;
  }

  /** Deliver on a microtask (never inside the writer's call), skipping watchers removed meanwhile. */
  #notify(watcher: Watcher, entry: KvEntry): void {
    queueMicrotask(() => {
      if (!this.#watchers.get(entry.key)?.has(watcher)) return;
      try {
        watcher({ ...entry, value: entry.value.slice() });
      } catch (err) {
        console.error(`kv watch callback for "${entry.key}" threw`, err);
      }
    });
  }
}

function positive(field: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new ValidationError(field, `${value} must be > 0`);
  return value;
}
