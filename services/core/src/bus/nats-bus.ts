/**
 * The distributed bus: NATS JetStream work-queue streams, Object Store and KV.
 *
 * Every service process connects its own `NatsBus` to the same server (and namespace). Names come
 * from `subjects.ts`; JetStream failures that callers must branch on are mapped to the typed errors
 * of `errors.ts` (integrity, not found, CAS conflict).
 */

import {
  JetStreamApiCodes,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type ObjectStore as NatsObjectStore, Objm, StorageType, setSha256Backend } from "@nats-io/obj";
import { connect, type NatsConnection, type QueuedIterator } from "@nats-io/transport-node";
import {
  KvConflictError,
  ObjectIntegrityError,
  ObjectNotFoundError,
  RlaifError,
  ValidationError,
} from "../errors.js";
import type { Bus, KeyValue, KvEntry, ObjectInfo, ObjectStore, Queue, QueueName } from "./bus.js";
import { DEFAULT_ACK_WAIT_MS, DEFAULT_DEDUP_WINDOW_MS } from "./memory-bus.js";
import type { NatsClientAuth } from "./nats-auth.js";
import { apiCode, NatsQueue } from "./nats-queue.js";
import { assertKvKey, type Subjects, subjectsFor } from "./subjects.js";

/** Options of `NatsBus.connect`. */
export interface NatsBusOptions {
  /** Prefix of every stream, subject and bucket (see `subjectsFor`), to isolate runs and tests. */
  namespace?: string;
  /** Consumer ack wait: an un-acked message is redelivered after it. Default 30 s. */
  ackWaitMs?: number;
  /** Stream duplicate window for `Nats-Msg-Id`. Default 2 min (JetStream's default). */
  dedupWindowMs?: number;
  /** Client name shown in server monitoring (e.g. the service name). */
  name?: string;
  /** This service's NATS user (or creds) and inbox prefix (nats-auth.ts); default: none. */
  auth?: NatsClientAuth;
}

/** `Bus` over a NATS server with JetStream; create with `NatsBus.connect`. */
export class NatsBus implements Bus {
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #subjects: Subjects;
  readonly #ackWaitMs: number;
  readonly #dedupWindowMs: number;
  /** Streams and buckets opened so far, by kind (`queue:<name>`, `objects`, `kv`). */
  readonly #opened = new Map<string, Promise<unknown>>();

  private constructor(nc: NatsConnection, jsm: JetStreamManager, subjects: Subjects, opts: NatsBusOptions) {
    this.#nc = nc;
    this.#js = jetstream(nc);
    this.#jsm = jsm;
    this.#subjects = subjects;
    this.#ackWaitMs = opts.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.#dedupWindowMs = opts.dedupWindowMs ?? DEFAULT_DEDUP_WINDOW_MS;
  }

  /**
   * Connect to `url` and check that JetStream is enabled. Streams and buckets are created lazily,
   * on first use. Throws `RlaifError` (with the cause) when the server is unreachable.
   */
  static async connect(url: string, opts: NatsBusOptions = {}): Promise<NatsBus> {
    const subjects = subjectsFor(opts.namespace);
    for (const field of ["ackWaitMs", "dedupWindowMs"] as const) {
      const v = opts[field];
      if (v !== undefined && !(Number.isFinite(v) && v > 0))
        throw new ValidationError(field, `${v} must be > 0`);
    }
    // Node's crypto is ~5x faster than the client's pure-JS SHA-256 on MB-sized weight blobs.
    setSha256Backend("native");
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: url, name: opts.name ?? "rlaif", ...opts.auth });
    } catch (err) {
      throw new RlaifError(`cannot connect to NATS at ${url}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return new NatsBus(nc, await jetstreamManager(nc), subjects, opts);
    } catch (err) {
      await nc.close();
      throw new RlaifError(`NATS at ${url} has no JetStream (start nats-server with -js)`, { cause: err });
    }
  }

  queue(name: QueueName): Promise<Queue> {
    const ctx = {
      nc: this.#nc,
      js: this.#js,
      jsm: this.#jsm,
      ackWaitMs: this.#ackWaitMs,
      dedupWindowMs: this.#dedupWindowMs,
    };
    return this.#once(`queue:${name}`, () => NatsQueue.open(name, this.#subjects.queues[name], ctx));
  }

  objects(): Promise<ObjectStore> {
    return this.#once("objects", async () => {
      const os = await new Objm(this.#js).create(this.#subjects.objectBucket, { storage: StorageType.File });
      return new NatsObjects(os);
    });
  }

  kv(): Promise<KeyValue> {
    return this.#once(
      "kv",
      async () => new NatsKeyValue(await new Kvm(this.#js).create(this.#subjects.kvBucket)),
    );
  }

  /** Stop every watch and close the connection. Idempotent. */
  async close(): Promise<void> {
    const kv = await (this.#opened.get("kv") as Promise<NatsKeyValue> | undefined)?.catch(() => undefined);
    kv?.stopAll();
    if (!this.#nc.isClosed()) await this.#nc.close();
  }

  /**
   * Open a stream or bucket once per bus (every service calls `queue()`/`kv()` freely), but
   * forget a failed attempt so the next call retries instead of replaying the failure.
   */
  #once<T>(key: string, open: () => Promise<T>): Promise<T> {
    let opened = this.#opened.get(key) as Promise<T> | undefined;
    if (!opened) {
      opened = open();
      opened.catch(() => this.#opened.delete(key));
      this.#opened.set(key, opened);
    }
    return opened;
  }
}

/** `ObjectStore` on a JetStream Object Store bucket (chunked, SHA-256 digest verified on read). */
class NatsObjects implements ObjectStore {
  readonly #os: NatsObjectStore;

  constructor(os: NatsObjectStore) {
    this.#os = os;
  }

  async put(name: string, data: Uint8Array): Promise<ObjectInfo> {
    if (!name) throw new ValidationError("name", "object name must be non-empty");
    const info = await this.#os.putBlob({ name }, data);
    return { name, size: info.size, sha256: digestHex(info.digest) };
  }

  async get(name: string): Promise<Uint8Array> {
    let data: Uint8Array | null;
    try {
      data = await this.#os.getBlob(name);
    } catch (err) {
      // The client re-hashes every chunk it streams and fails the read on a digest mismatch.
      if (/digests? do not match|corrupt/i.test((err as Error).message ?? "")) {
        throw new ObjectIntegrityError(`object "${name}" failed SHA-256 verification`, { cause: err });
      }
      throw err;
    }
    if (data === null) throw new ObjectNotFoundError(`object "${name}" not found`);
    return data;
  }

  async info(name: string): Promise<ObjectInfo | null> {
    const info = await this.#os.info(name);
    if (!info || info.deleted) return null;
    return { name, size: info.size, sha256: digestHex(info.digest) };
  }

  async delete(name: string): Promise<void> {
    await this.#os.delete(name);
  }
}

/** The Object Store records `SHA-256=<base64url>` (other clients may write hex); we expose hex. */
function digestHex(digest: string): string {
  const value = digest.replace(/^SHA-256=/, "");
  if (/^[0-9a-fA-F]{64}$/.test(value)) return value.toLowerCase();
  return Buffer.from(value, "base64").toString("hex");
}

/** `KeyValue` on a JetStream KV bucket; revisions are stream sequences. */
class NatsKeyValue implements KeyValue {
  readonly #kv: KV;
  readonly #watches = new Set<QueuedIterator<unknown>>();

  constructor(kv: KV) {
    this.#kv = kv;
  }

  async get(key: string): Promise<KvEntry | null> {
    assertKvKey(key);
    const e = await this.#kv.get(key);
    return e && e.operation === "PUT" ? { key, value: e.value, revision: e.revision } : null;
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    assertKvKey(key);
    return this.#kv.put(key, value);
  }

  async update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    assertKvKey(key);
    if (!Number.isInteger(expectedRevision) || expectedRevision < 0) {
      throw new ValidationError("expectedRevision", `${expectedRevision} must be a non-negative integer`);
    }
    try {
      return expectedRevision === 0
        ? await this.#kv.create(key, value)
        : await this.#kv.update(key, value, expectedRevision);
    } catch (err) {
      const code = apiCode(err);
      if (
        code === JetStreamApiCodes.StreamWrongLastSequence ||
        code === JetStreamApiCodes.StreamWrongLastSequenceUnknown
      ) {
        throw new KvConflictError(`kv key "${key}": revision is not ${expectedRevision}`, { cause: err });
      }
      throw err;
    }
  }

  async watch(key: string, onChange: (entry: KvEntry) => void): Promise<() => void> {
    assertKvKey(key);
    const iter = await this.#kv.watch({ key, ignoreDeletes: true });
    this.#watches.add(iter);
    let stopped = false;
    void (async () => {
      try {
        for await (const e of iter) {
          if (stopped) break;
          if (e.operation !== "PUT") continue;
          try {
            onChange({ key, value: e.value, revision: e.revision });
          } catch (err) {
            console.error(`kv watch callback for "${key}" threw`, err);
          }
        }
      } catch {
        // The connection closed under the watch: nothing more will change, so just end it.
      } finally {
        this.#watches.delete(iter);
      }
    })();
    return () => {
      stopped = true;
      this.#watches.delete(iter);
      iter.stop();
    };
  }

  /** Stop every watch (on bus close). */
  stopAll(): void {
    for (const iter of this.#watches) iter.stop();
    this.#watches.clear();
  }
}
