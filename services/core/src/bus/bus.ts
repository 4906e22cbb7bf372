/**
 * The message bus contract shared by every service.
 *
 * Two implementations satisfy it: `NatsBus` (NATS JetStream: work-queue streams, Object Store,
 * KV) for the distributed mode, and `MemoryBus` for the embedded default. Services depend only on
 * this interface, so the embedded run and the distributed run execute the same code path, and both
 * implementations pass the same contract tests (test/bus-contract.test.ts).
 */

/** Headers carried with a queued message (e.g. W3C `traceparent`). */
export type Headers = Record<string, string>;

/** Options for publishing one message onto a queue. */
export interface PublishOptions {
  /**
   * Idempotency key. A second publish with the same id inside the dedup window is dropped
   * (JetStream `Nats-Msg-Id`), which makes re-publishing after a crash safe.
   */
  msgId: string;
  headers?: Headers;
}

/** Result of a publish: whether the bus stored it or recognised it as a duplicate. */
export interface PublishAck {
  seq: number;
  duplicate: boolean;
}

/**
 * One delivered message. It stays owned by the consumer until `ack` (done: removed from a work
 * queue) or `nak` (give it back for redelivery, optionally after a delay). A message neither acked
 * nor nakked within the queue's ack wait is redelivered, so a crashed consumer loses nothing.
 */
export interface QueueMessage {
  readonly data: Uint8Array;
  readonly headers: Headers;
  /** The idempotency key it was published with. */
  readonly msgId: string;
  /** 1 on first delivery, then 2, 3, … on redeliveries. */
  readonly deliveryCount: number;
  ack(): Promise<void>;
  nak(delayMs?: number): Promise<void>;
  /**
   * Still working on it: restart the ack wait, so a consumer that retries a peer for longer than
   * the ack wait keeps the message instead of having it redelivered to another consumer meanwhile.
   */
  inProgress(): Promise<void>;
}

/** Options for one pull. */
export interface PullOptions {
  /** At most this many messages. */
  max: number;
  /** Wait at most this long for the first message; resolve with what arrived (maybe none). */
  expiresMs: number;
}

/**
 * A durable work queue: each message is delivered to one consumer of the named consumer group
 * and removed once acked (JetStream work-queue retention).
 */
export interface Queue {
  readonly name: string;
  publish(data: Uint8Array, opts: PublishOptions): Promise<PublishAck>;
  /** Pull up to `max` messages for consumer group `consumer` (a durable consumer name). */
  pull(consumer: string, opts: PullOptions): Promise<QueueMessage[]>;
  /** Messages stored and not yet acked. */
  pending(): Promise<number>;
  /** Drop every stored message (used to start a run from a clean queue). */
  purge(): Promise<void>;
}

/** Metadata of a stored object. */
export interface ObjectInfo {
  name: string;
  size: number;
  /** Lower-case hex SHA-256 of the content, computed by the writer. */
  sha256: string;
}

/**
 * The chunks of one object's content, in order. A function, so a put cut off by a disconnect can
 * start the content again from its first chunk.
 */
export type ChunkSource = () => Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Blob storage for weights (JetStream Object Store). */
export interface ObjectStore {
  put(name: string, data: Uint8Array): Promise<ObjectInfo>;
  /**
   * Store the chunks `source` yields as one object, streamed: the store never needs the content
   * whole, so a publisher that yields views of its tensors never builds a second copy of them.
   */
  putStream(name: string, source: ChunkSource): Promise<ObjectInfo>;
  /**
   * Read an object as it arrives, chunk by chunk, so a reader can check and place each chunk
   * without first holding every chunk and then their concatenation. The store's own digest is
   * checked once the last chunk is in (the iteration then throws `ObjectIntegrityError`);
   * `ObjectNotFoundError` when absent.
   */
  getStream(name: string): AsyncIterable<Uint8Array>;
  /**
   * Read an object and verify it against the SHA-256 recorded at put time.
   * Throws `ObjectIntegrityError` on mismatch and `ObjectNotFoundError` when absent.
   */
  get(name: string): Promise<Uint8Array>;
  info(name: string): Promise<ObjectInfo | null>;
  delete(name: string): Promise<void>;
  /** Every stored object (deleted ones excluded), so old weights versions can be collected. */
  list(): Promise<ObjectInfo[]>;
}

/** A KV entry with the revision used for compare-and-set. */
export interface KvEntry {
  key: string;
  value: Uint8Array;
  revision: number;
}

/** Small consistent state: the latest-weights pointer, run state (JetStream KV). */
export interface KeyValue {
  get(key: string): Promise<KvEntry | null>;
  put(key: string, value: Uint8Array): Promise<number>;
  /**
   * Write only if the key's current revision is `expectedRevision` (0: only if absent).
   * Throws `KvConflictError` otherwise; returns the new revision.
   */
  update(key: string, value: Uint8Array, expectedRevision: number): Promise<number>;
  /**
   * Call `onChange` with the current value (if any) and then with every later change of `key`,
   * in order, until the returned function is called.
   */
  watch(key: string, onChange: (entry: KvEntry) => void): Promise<() => void>;
}

/** The whole bus a service is given. */
export interface Bus {
  queue(name: QueueName): Promise<Queue>;
  objects(): Promise<ObjectStore>;
  kv(): Promise<KeyValue>;
  close(): Promise<void>;
}

/**
 * The queues this system uses; their subjects and stream names live in `subjects.ts`.
 * "deadLetters" holds the prompt jobs the Rollout gave up on after their last allowed delivery,
 * kept for operators to inspect (nothing consumes it).
 */
export type QueueName = "jobs" | "trajectories" | "deadLetters";
