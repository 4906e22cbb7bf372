/**
 * The distributed bus: NATS JetStream work-queue streams, Object Store and KV.
 *
 * Every service process connects its own `NatsBus` to the same server (and namespace). Names come
 * from `subjects.ts`; JetStream failures that callers must branch on are mapped to the typed errors
 * of `errors.ts` (integrity, not found, CAS conflict).
 *
 * Outages: the connection reconnects forever (with backoff and jitter) and logs each disconnect
 * and reconnect with the server's address. Meanwhile every operation retries until the retry
 * deadline (`nats-retry.ts`) and then fails with `BusUnavailableError`; KV watches re-open after
 * the reconnect, so a Policy keeps following the latest weights; nothing rejects unhandled.
 */

import {
  JetStreamApiCodes,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { type KV, Kvm, type KvWatchEntry } from "@nats-io/kv";
import { type ObjectStore as NatsObjectStore, Objm, StorageType, setSha256Backend } from "@nats-io/obj";
import { connect, type NatsConnection, type QueuedIterator } from "@nats-io/transport-node";
import {
  KvConflictError,
  ObjectIntegrityError,
  ObjectNotFoundError,
  RlaifError,
  ValidationError,
} from "../errors.js";
import type { Bus, ChunkSource, KeyValue, KvEntry, ObjectInfo, ObjectStore, QueueName } from "./bus.js";
import { DEFAULT_ACK_WAIT_MS, DEFAULT_DEDUP_WINDOW_MS } from "./memory-bus.js";
import type { NatsClientAuth } from "./nats-auth.js";
import { NatsQueue } from "./nats-queue.js";
import {
  apiCode,
  DEFAULT_NATS_RETRY_MS,
  isTransientNatsError,
  type RetryContext,
  retryTransient,
} from "./nats-retry.js";
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
  /** How long an operation retries while the server is away, before `BusUnavailableError`. Default 30 s. */
  retryMs?: number;
  /** Wait between reconnect attempts (plus up to half as much jitter). Default 1 s. */
  reconnectWaitMs?: number;
  /** Where disconnects, reconnects and lost signals are logged. Default: stderr. */
  log?: (line: string) => void;
  /** This service's NATS user (or creds) and inbox prefix (nats-auth.ts); default: none. */
  auth?: NatsClientAuth;
  /**
   * Servers each stream and bucket is stored on (JetStream `num_replicas`, 1-5). Set, it is used
   * on create and an existing stream with another count is updated to it (`rlaif nats-init` on a
   * 3-server cluster: R3). Unset (the services), streams are created with the server's default
   * (1) and an existing stream keeps whatever count it has.
   */
  replicas?: number;
}

/** JetStream's bounds on a stream's replica count. */
const MAX_REPLICAS = 5;

/** Default wait between reconnect attempts: a restarted server is found within about a second. */
const DEFAULT_RECONNECT_WAIT_MS = 1_000;

function stderrLog(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** `Bus` over a NATS server with JetStream; create with `NatsBus.connect`. */
export class NatsBus implements Bus {
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #subjects: Subjects;
  readonly #ackWaitMs: number;
  readonly #dedupWindowMs: number;
  readonly #retry: RetryContext;
  readonly #log: (line: string) => void;
  readonly #replicas: number | undefined;
  /** Streams and buckets opened so far, by kind (`queue:<name>`, `objects`, `kv`). */
  readonly #opened = new Map<string, Promise<unknown>>();

  private constructor(
    nc: NatsConnection,
    jsm: JetStreamManager,
    subjects: Subjects,
    url: string,
    opts: NatsBusOptions,
  ) {
    this.#nc = nc;
    this.#js = jetstream(nc);
    this.#jsm = jsm;
    this.#subjects = subjects;
    this.#ackWaitMs = opts.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.#dedupWindowMs = opts.dedupWindowMs ?? DEFAULT_DEDUP_WINDOW_MS;
    this.#log = opts.log ?? stderrLog;
    this.#replicas = opts.replicas;
    this.#retry = {
      server: url,
      retryMs: opts.retryMs ?? DEFAULT_NATS_RETRY_MS,
      closed: () => nc.isClosed(),
    };
    void this.#watchStatus(url);
  }

  /** Log every disconnect and reconnect (with the server) until the connection is closed. */
  async #watchStatus(url: string): Promise<void> {
    try {
      for await (const s of this.#nc.status()) {
        if (s.type === "disconnect") {
          this.#log(`NATS: disconnected from ${s.server || url}; reconnecting until it is back`);
        } else if (s.type === "reconnect") {
          this.#log(`NATS: reconnected to ${s.server || url}`);
        } else if (s.type === "error") {
          this.#log(`NATS at ${url}: ${s.error.message}`);
        }
      }
    } catch (err) {
      this.#log(`NATS at ${url}: status monitor ended: ${(err as Error).message}`);
    }
  }

  /**
   * Connect to `url` and check that JetStream is enabled. Streams and buckets are created lazily,
   * on first use. Throws `RlaifError` (with the cause) when the server is unreachable.
   */
  static async connect(url: string, opts: NatsBusOptions = {}): Promise<NatsBus> {
    const subjects = subjectsFor(opts.namespace);
    for (const field of ["ackWaitMs", "dedupWindowMs", "retryMs", "reconnectWaitMs"] as const) {
      const v = opts[field];
      if (v !== undefined && !(Number.isFinite(v) && v > 0))
        throw new ValidationError(field, `${v} must be > 0`);
    }
    const r = opts.replicas;
    if (r !== undefined && !(Number.isInteger(r) && r >= 1 && r <= MAX_REPLICAS))
      throw new ValidationError("replicas", `${r} must be an integer from 1 to ${MAX_REPLICAS}`);
    // Node's crypto is ~5x faster than the client's pure-JS SHA-256 on MB-sized weight blobs.
    setSha256Backend("native");
    let nc: NatsConnection;
    try {
      // The first connect fails fast (a wrong URL is a config error); after it, reconnect forever.
      const wait = opts.reconnectWaitMs ?? DEFAULT_RECONNECT_WAIT_MS;
      nc = await connect({
        servers: url,
        name: opts.name ?? "rlaif",
        maxReconnectAttempts: -1,
        reconnectTimeWait: wait,
        reconnectJitter: Math.round(wait / 2),
        ...opts.auth,
      });
    } catch (err) {
      throw new RlaifError(`cannot connect to NATS at ${url}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return new NatsBus(nc, await jetstreamManager(nc), subjects, url, opts);
    } catch (err) {
      await nc.close();
      throw new RlaifError(`NATS at ${url} has no JetStream (start nats-server with -js)`, { cause: err });
    }
  }

  queue(name: QueueName): Promise<NatsQueue> {
    const ctx = {
      nc: this.#nc,
      js: this.#js,
      jsm: this.#jsm,
      ackWaitMs: this.#ackWaitMs,
      dedupWindowMs: this.#dedupWindowMs,
      retry: this.#retry,
      log: this.#log,
      ...(this.#replicas === undefined ? {} : { replicas: this.#replicas }),
    };
    return this.#once(`queue:${name}`, () => NatsQueue.open(name, this.#subjects.queues[name], ctx));
  }

  objects(): Promise<ObjectStore> {
    return this.#once("objects", async () => {
      const bucket = this.#subjects.objectBucket;
      const replicas = this.#replicas === undefined ? {} : { replicas: this.#replicas };
      const os = await retryTransient(`opening object store ${bucket}`, this.#retry, () =>
        new Objm(this.#js).create(bucket, { storage: StorageType.File, ...replicas }),
      );
      await this.#alignReplicas(`OBJ_${bucket}`);
      return new NatsObjects(os, this.#retry);
    });
  }

  kv(): Promise<KeyValue> {
    return this.#once("kv", async () => {
      const bucket = this.#subjects.kvBucket;
      const replicas = this.#replicas === undefined ? {} : { replicas: this.#replicas };
      const kv = await retryTransient(`opening KV ${bucket}`, this.#retry, () =>
        new Kvm(this.#js).create(bucket, replicas),
      );
      await this.#alignReplicas(`KV_${bucket}`);
      return new NatsKeyValue(kv, this.#retry, this.#log);
    });
  }

  /**
   * Update a bucket's stream to the configured replica count when it was created with another
   * (by a service that came up first); no-op without `replicas` or when it already matches. The
   * KV and Object Store clients only create: they leave an existing bucket's stream as it is.
   */
  async #alignReplicas(stream: string): Promise<void> {
    const want = this.#replicas;
    if (want === undefined) return;
    await retryTransient(`aligning replicas of ${stream}`, this.#retry, async () => {
      const info = await this.#jsm.streams.info(stream);
      if ((info.config.num_replicas || 1) !== want)
        await this.#jsm.streams.update(stream, { ...info.config, num_replicas: want });
    });
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
  readonly #retry: RetryContext;

  constructor(os: NatsObjectStore, retry: RetryContext) {
    this.#os = os;
    this.#retry = retry;
  }

  async put(name: string, data: Uint8Array): Promise<ObjectInfo> {
    if (!name) throw new ValidationError("name", "object name must be non-empty");
    // A put cut off by a disconnect is redone whole: the object is replaced, never half written.
    const info = await retryTransient(`storing object "${name}"`, this.#retry, () =>
      this.#os.putBlob({ name }, data),
    );
    return { name, size: info.size, sha256: digestHex(info.digest) };
  }

  async putStream(name: string, source: ChunkSource): Promise<ObjectInfo> {
    if (!name) throw new ValidationError("name", "object name must be non-empty");
    // As put: a stream cut off by a disconnect is put again from its first chunk.
    const info = await retryTransient(`storing object "${name}"`, this.#retry, () =>
      this.#os.put({ name }, readableOf(source())),
    );
    return { name, size: info.size, sha256: digestHex(info.digest) };
  }

  /**
   * The object's chunks as the server sends them. A transient failure mid-way (a reconnect)
   * re-opens the read and skips the bytes already yielded, provided the object is still the same
   * upload (same nuid); the client checks the digest of each full read at its end.
   */
  async *getStream(name: string): AsyncIterable<Uint8Array> {
    let yielded = 0;
    let nuid: string | null = null;
    const deadline = performance.now() + this.#retry.retryMs;
    for (;;) {
      const r = await retryTransient(`reading object "${name}"`, this.#retry, () => this.#os.get(name));
      if (r === null) throw new ObjectNotFoundError(`object "${name}" not found`);
      if (nuid !== null && r.info.nuid !== nuid) {
        throw new ObjectIntegrityError(`object "${name}" was replaced while it was being read`);
      }
      nuid = r.info.nuid;
      let skip = yielded;
      const reader = r.data.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (skip >= value.length) {
            skip -= value.length;
            continue;
          }
          const chunk = skip > 0 ? value.subarray(skip) : value;
          skip = 0;
          yielded += chunk.length;
          yield chunk;
        }
        const err = await r.error;
        if (err) throw err;
        return;
      } catch (err) {
        if (/digests? do not match|corrupt/i.test((err as Error).message ?? "")) {
          throw new ObjectIntegrityError(`object "${name}" failed SHA-256 verification`, { cause: err });
        }
        if (!isTransientNatsError(err) || this.#retry.closed() || performance.now() > deadline) throw err;
      } finally {
        reader.releaseLock();
      }
    }
  }

  async get(name: string): Promise<Uint8Array> {
    let data: Uint8Array | null;
    try {
      data = await retryTransient(`reading object "${name}"`, this.#retry, () => this.#os.getBlob(name));
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
    const info = await retryTransient(`reading object info "${name}"`, this.#retry, () =>
      this.#os.info(name),
    );
    if (!info || info.deleted) return null;
    return { name, size: info.size, sha256: digestHex(info.digest) };
  }

  async delete(name: string): Promise<void> {
    await retryTransient(`deleting object "${name}"`, this.#retry, () => this.#os.delete(name));
  }

  async list(): Promise<ObjectInfo[]> {
    const infos = await this.#os.list();
    return infos
      .filter((i) => !i.deleted)
      .map((i) => ({ name: i.name, size: i.size, sha256: digestHex(i.digest) }));
  }
}

/** A ReadableStream (what the Object Store client puts) pulling from `chunks`. */
function readableOf(chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it =
    Symbol.asyncIterator in chunks
      ? (chunks as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
      : (chunks as Iterable<Uint8Array>)[Symbol.iterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await it.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel() {
      await it.return?.();
    },
  });
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
  readonly #retry: RetryContext;
  readonly #log: (line: string) => void;
  /** Stops of the live watches, so `close()` ends them all. */
  readonly #watches = new Set<() => void>();

  constructor(kv: KV, retry: RetryContext, log: (line: string) => void) {
    this.#kv = kv;
    this.#retry = retry;
    this.#log = log;
  }

  async get(key: string): Promise<KvEntry | null> {
    assertKvKey(key);
    const e = await retryTransient(`reading KV "${key}"`, this.#retry, () => this.#kv.get(key));
    return e && e.operation === "PUT" ? { key, value: e.value, revision: e.revision } : null;
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    assertKvKey(key);
    return retryTransient(`writing KV "${key}"`, this.#retry, () => this.#kv.put(key, value));
  }

  async update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    assertKvKey(key);
    if (!Number.isInteger(expectedRevision) || expectedRevision < 0) {
      throw new ValidationError("expectedRevision", `${expectedRevision} must be a non-negative integer`);
    }
    let attempts = 0;
    try {
      return await retryTransient(`updating KV "${key}"`, this.#retry, () => {
        attempts++;
        return expectedRevision === 0
          ? this.#kv.create(key, value)
          : this.#kv.update(key, value, expectedRevision);
      });
    } catch (err) {
      const code = apiCode(err);
      if (
        code === JetStreamApiCodes.StreamWrongLastSequence ||
        code === JetStreamApiCodes.StreamWrongLastSequenceUnknown
      ) {
        // A retried write whose first attempt landed (only the reply was lost) sees its own value.
        const now = attempts > 1 ? await this.get(key) : null;
        if (now && Buffer.from(now.value).equals(Buffer.from(value))) return now.revision;
        throw new KvConflictError(`kv key "${key}": revision is not ${expectedRevision}`, { cause: err });
      }
      throw err;
    }
  }

  /**
   * Follow `key` until stopped. A watch the connection drops (the server restarted) is re-opened
   * after a pause, and entries at or below the last revision delivered are skipped, so `onChange`
   * sees each change once and in order, across any number of outages.
   */
  async watch(key: string, onChange: (entry: KvEntry) => void): Promise<() => void> {
    assertKvKey(key);
    let stopped = false;
    let last = 0;
    let iter: QueuedIterator<KvWatchEntry> | null = null;
    const open = () =>
      retryTransient(`watching KV "${key}"`, this.#retry, () => this.#kv.watch({ key, ignoreDeletes: true }));
    const follow = async (it: QueuedIterator<KvWatchEntry>): Promise<void> => {
      for await (const e of it) {
        if (stopped) return;
        if (e.operation !== "PUT" || e.revision <= last) continue;
        last = e.revision;
        try {
          onChange({ key, value: e.value, revision: e.revision });
        } catch (err) {
          this.#log(`kv watch callback for "${key}" threw: ${(err as Error).message}`);
        }
      }
    };
    const stop = () => {
      stopped = true;
      this.#watches.delete(stop);
      iter?.stop();
    };
    iter = await open();
    this.#watches.add(stop);
    void (async () => {
      for (let pause = 500; !stopped && !this.#retry.closed(); pause = Math.min(pause * 2, 5_000)) {
        try {
          if (!iter) iter = await open();
          await follow(iter);
        } catch (err) {
          if (stopped || this.#retry.closed()) break;
          this.#log(`NATS at ${this.#retry.server}: watch of "${key}" failed (${(err as Error).message})`);
        }
        iter = null;
        if (stopped || this.#retry.closed()) break;
        this.#log(`NATS at ${this.#retry.server}: re-opening the watch of "${key}" in ${pause} ms`);
        await new Promise((r) => setTimeout(r, pause));
      }
      this.#watches.delete(stop);
    })();
    return stop;
  }

  /** Stop every watch (on bus close). */
  stopAll(): void {
    for (const stop of [...this.#watches]) stop();
  }
}
