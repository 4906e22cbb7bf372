/**
 * In-process work queue with JetStream work-queue semantics, used by `MemoryBus`.
 *
 * It reproduces what the services rely on from JetStream so the embedded run behaves like the
 * distributed one: dedup by msgId inside a window, one delivery per message at a time, removal on
 * ack, redelivery (with a growing delivery count) after a nak or when the ack wait runs out, and a
 * single consumer group per queue. Timers are unref'd so an idle queue never keeps Node alive.
 */

import { RlaifError, ValidationError } from "../errors.js";
import type {
  Headers,
  PublishAck,
  PublishOptions,
  PullOptions,
  Queue,
  QueueMessage,
  QueueName,
} from "./bus.js";
import { consumerName } from "./subjects.js";

/** Timing knobs of a `MemoryQueue`; defaults mirror JetStream's (see `MemoryBusOptions`). */
export interface MemoryQueueOptions {
  ackWaitMs: number;
  dedupWindowMs: number;
}

interface Stored {
  readonly seq: number;
  readonly data: Uint8Array;
  readonly headers: Headers;
  readonly msgId: string;
  /** Number of deliveries so far; identifies the current delivery. */
  deliveries: number;
  /** Delivered and neither acked nor given back yet (or waiting out a nak delay). */
  inflight: boolean;
  timer?: NodeJS.Timeout;
}

interface Waiter {
  readonly max: number;
  readonly resolve: (msgs: QueueMessage[]) => void;
  readonly timer: NodeJS.Timeout;
}

/** `Queue` held in process memory; see the module comment for the semantics it reproduces. */
export class MemoryQueue implements Queue {
  readonly name: QueueName;
  readonly #opts: MemoryQueueOptions;
  #seq = 0;
  readonly #stored = new Map<number, Stored>();
  /** Never-delivered messages in publish order. */
  #fresh: number[] = [];
  /** Messages given back (nak / ack-wait expiry), served before fresh ones as JetStream does. */
  #redeliver: number[] = [];
  /** msgId → seq and expiry; Map order is expiry order because the window is constant. */
  readonly #dedup = new Map<string, { seq: number; expiresAt: number }>();
  #group: string | undefined;
  #waiters: Waiter[] = [];
  #closed = false;

  constructor(name: QueueName, opts: MemoryQueueOptions) {
    this.name = name;
    this.#opts = opts;
  }

  async publish(data: Uint8Array, opts: PublishOptions): Promise<PublishAck> {
    this.#assertOpen();
    if (!opts.msgId) throw new ValidationError("msgId", "must be a non-empty string");
    const now = Date.now();
    this.#pruneDedup(now);
    const seen = this.#dedup.get(opts.msgId);
    if (seen) return { seq: seen.seq, duplicate: true };
    const seq = ++this.#seq;
    this.#stored.set(seq, {
      seq,
      data: data.slice(),
      headers: { ...opts.headers },
      msgId: opts.msgId,
      deliveries: 0,
      inflight: false,
    });
    this.#dedup.set(opts.msgId, { seq, expiresAt: now + this.#opts.dedupWindowMs });
    this.#fresh.push(seq);
    this.#serveWaiters();
    return { seq, duplicate: false };
  }

  async pull(consumer: string, opts: PullOptions): Promise<QueueMessage[]> {
    this.#assertOpen();
    this.#claimGroup(consumerName(consumer));
    if (!Number.isInteger(opts.max) || opts.max < 1) {
      throw new ValidationError("max", `${opts.max} must be a positive integer`);
    }
    const now = this.#take(opts.max);
    if (now.length > 0 || opts.expiresMs <= 0) return now;
    return new Promise((resolve) => {
      const waiter: Waiter = {
        max: opts.max,
        resolve,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          resolve([]);
        }, opts.expiresMs).unref(),
      };
      this.#waiters.push(waiter);
    });
  }

  async pending(): Promise<number> {
    return this.#stored.size;
  }

  async purge(): Promise<void> {
    for (const entry of this.#stored.values()) clearTimeout(entry.timer);
    this.#stored.clear();
    this.#fresh = [];
    this.#redeliver = [];
  }

  /** Stop every timer and release waiting pulls (with no messages); later calls throw. */
  close(): void {
    this.#closed = true;
    for (const entry of this.#stored.values()) clearTimeout(entry.timer);
    for (const waiter of this.#waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve([]);
    }
    this.#waiters = [];
  }

  #assertOpen(): void {
    if (this.#closed) throw new RlaifError(`queue "${this.name}" is closed`);
  }

  /** JetStream refuses a second unfiltered consumer on a work-queue stream; so do we. */
  #claimGroup(group: string): void {
    this.#group ??= group;
    if (this.#group !== group) {
      throw new RlaifError(
        `queue "${this.name}" is already consumed by group "${this.#group}"; a work queue has one consumer group, not "${group}"`,
      );
    }
  }

  #pruneDedup(now: number): void {
    for (const [id, seen] of this.#dedup) {
      if (seen.expiresAt > now) break;
      this.#dedup.delete(id);
    }
  }

  #serveWaiters(): void {
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0] as Waiter;
      const msgs = this.#take(waiter.max);
      if (msgs.length === 0) return;
      this.#waiters.shift();
      clearTimeout(waiter.timer);
      waiter.resolve(msgs);
    }
  }

  #take(max: number): QueueMessage[] {
    const out: QueueMessage[] = [];
    while (out.length < max) {
      const entry = this.#nextReady();
      if (!entry) break;
      out.push(this.#deliver(entry));
    }
    return out;
  }

  #nextReady(): Stored | undefined {
    for (const list of [this.#redeliver, this.#fresh]) {
      while (list.length > 0) {
        const entry = this.#stored.get(list.shift() as number);
        if (entry && !entry.inflight) return entry;
      }
    }
    return undefined;
  }

  #deliver(entry: Stored): QueueMessage {
    entry.deliveries += 1;
    entry.inflight = true;
    const delivery = entry.deliveries;
    entry.timer = setTimeout(() => this.#giveBack(entry.seq, delivery), this.#opts.ackWaitMs).unref();
    return {
      data: entry.data.slice(),
      headers: { ...entry.headers },
      msgId: entry.msgId,
      deliveryCount: delivery,
      ack: async () => this.#ack(entry.seq),
      nak: async (delayMs?: number) => this.#nak(entry.seq, delivery, delayMs ?? 0),
      inProgress: async () => this.#extend(entry.seq, delivery),
    };
  }

  /** Like JetStream, a late ack (even after the ack wait ran out) still completes the message. */
  #ack(seq: number): void {
    const entry = this.#stored.get(seq);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.#stored.delete(seq);
  }

  #nak(seq: number, delivery: number, delayMs: number): void {
    const entry = this.#stored.get(seq);
    if (!entry?.inflight || entry.deliveries !== delivery) return;
    clearTimeout(entry.timer);
    if (delayMs > 0) {
      entry.timer = setTimeout(() => this.#giveBack(seq, delivery), delayMs).unref();
    } else {
      this.#giveBack(seq, delivery);
    }
  }

  /** Restart the ack wait of delivery `delivery` of message `seq`, if it is still held. */
  #extend(seq: number, delivery: number): void {
    const entry = this.#stored.get(seq);
    if (!entry?.inflight || entry.deliveries !== delivery || entry.timer === undefined) return;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => this.#giveBack(seq, delivery), this.#opts.ackWaitMs).unref();
  }

  /** Make delivery `delivery` of message `seq` available again, unless it was settled meanwhile. */
  #giveBack(seq: number, delivery: number): void {
    const entry = this.#stored.get(seq);
    if (!entry?.inflight || entry.deliveries !== delivery || this.#closed) return;
    entry.inflight = false;
    entry.timer = undefined;
    this.#redeliver.push(seq);
    this.#serveWaiters();
  }
}
