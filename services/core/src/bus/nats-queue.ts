/**
 * A JetStream work-queue stream behind the `Queue` contract, used by `NatsBus`.
 *
 * One stream per queue (work-queue retention: a message is removed once acked), one durable pull
 * consumer per consumer group (explicit ack, `ack_wait`, unlimited redeliveries). Publishing sets
 * `Nats-Msg-Id`, so the stream's duplicate window drops re-publishes after a crash.
 *
 * A NATS outage never escapes as a crash: publishes, acks and stream calls retry until the bus's
 * retry deadline (`retryTransient`), a pull during the outage waits and returns nothing, and a nak
 * or in-progress signal that cannot be sent is only logged (the ack wait redelivers the message).
 */

import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  JetStreamApiCodes,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type MsgHdrs, type NatsConnection, nanos, headers as natsHeaders } from "@nats-io/transport-node";
import { BusUnavailableError, RlaifError, ValidationError } from "../errors.js";
import type {
  Headers,
  PublishAck,
  PublishOptions,
  PullOptions,
  Queue,
  QueueMessage,
  QueueName,
} from "./bus.js";
import { apiCode, type RetryContext, retryTransient } from "./nats-retry.js";
import { consumerName, type QueueNames } from "./subjects.js";

export { apiCode };

/**
 * JetStream refuses pull requests that expire in under 1 s, so `pull` waits at least this long
 * when nothing is available, even if `expiresMs` is shorter.
 */
export const MIN_PULL_EXPIRES_MS = 1_000;

/** JetStream's header carrying the idempotency key; surfaced as `QueueMessage.msgId`. */
const MSG_ID_HEADER = "Nats-Msg-Id";
/** JetStream API error codes for a second consumer on a work-queue stream (unfiltered / overlapping). */
const WQ_CONSUMER_CONFLICT_CODES = new Set([10099, 10100]);
/** A fetch that neither delivers nor ends this long after its expiry is stopped (a lost connection). */
const FETCH_GRACE_MS = 5_000;
/** How long an ack waits for the server's confirmation (retrying across a reconnect). */
const ACK_CONFIRM_MS = 10_000;
/** How long one ack attempt waits for its reply. */
const ACK_REPLY_TIMEOUT_MS = 2_000;
/** At most one "pull failed" line per queue this often, so an outage does not flood the log. */
const PULL_LOG_EVERY_MS = 10_000;

/** What a `NatsQueue` needs from its `NatsBus`. */
export interface NatsQueueContext {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  ackWaitMs: number;
  dedupWindowMs: number;
  /** Server address and deadline for riding out a disconnect. */
  retry: RetryContext;
  log: (line: string) => void;
  /** Replica count a stream is created with and aligned to (`NatsBusOptions.replicas`); unset: left as is. */
  replicas?: number;
}

/** `Queue` on a JetStream work-queue stream; create with `NatsQueue.open`. */
export class NatsQueue implements Queue {
  readonly name: QueueName;
  readonly #names: QueueNames;
  readonly #ctx: NatsQueueContext;
  readonly #consumers = new Map<string, Promise<Consumer>>();
  #lastPullLog = Number.NEGATIVE_INFINITY;

  private constructor(name: QueueName, names: QueueNames, ctx: NatsQueueContext) {
    this.name = name;
    this.#names = names;
    this.#ctx = ctx;
  }

  /** Create the stream, or update it to the wanted config (idempotent, safe from every process). */
  static async open(name: QueueName, names: QueueNames, ctx: NatsQueueContext): Promise<NatsQueue> {
    const wanted = {
      name: names.stream,
      subjects: [names.subject],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: nanos(ctx.dedupWindowMs),
      ...(ctx.replicas === undefined ? {} : { num_replicas: ctx.replicas }),
    };
    await retryTransient(`opening stream ${names.stream}`, ctx.retry, async () => {
      const existing = await ctx.jsm.streams.info(names.stream).catch((err: unknown) => {
        if (apiCode(err) === JetStreamApiCodes.StreamNotFound) return null;
        throw err;
      });
      if (!existing) {
        await ctx.jsm.streams.add(wanted);
      } else if (
        existing.config.duplicate_window !== wanted.duplicate_window ||
        existing.config.subjects?.join() !== wanted.subjects.join() ||
        (ctx.replicas !== undefined && (existing.config.num_replicas || 1) !== ctx.replicas)
      ) {
        await ctx.jsm.streams.update(names.stream, { ...existing.config, ...wanted });
      }
    });
    return new NatsQueue(name, names, ctx);
  }

  async publish(data: Uint8Array, opts: PublishOptions): Promise<PublishAck> {
    if (!opts.msgId) throw new ValidationError("msgId", "must be a non-empty string");
    const h = natsHeaders();
    for (const [key, value] of Object.entries(opts.headers ?? {})) h.set(key, value);
    // Safe to repeat: a copy that did reach the stream is dropped by its Nats-Msg-Id.
    const ack = await retryTransient(`publish ${opts.msgId} to ${this.#names.subject}`, this.#ctx.retry, () =>
      this.#ctx.js.publish(this.#names.subject, data, { msgID: opts.msgId, headers: h }),
    );
    return { seq: ack.seq, duplicate: ack.duplicate };
  }

  /**
   * Wait (at least `MIN_PULL_EXPIRES_MS`) for one message, then take up to `max - 1` more of those
   * already waiting. Two fetches because a single JetStream fetch of `max` would hold the caller
   * until `max` arrive or the request expires, instead of returning what is there.
   *
   * While NATS is unreachable a pull waits out its expiry and returns nothing (logged, at most
   * every 10 s), so a consumer's loop keeps its own deadline and resumes after the reconnect.
   */
  async pull(consumer: string, opts: PullOptions): Promise<QueueMessage[]> {
    if (!Number.isInteger(opts.max) || opts.max < 1) {
      throw new ValidationError("max", `${opts.max} must be a positive integer`);
    }
    const group = consumerName(consumer);
    const c = await this.#consumer(group);
    const expires = Math.max(opts.expiresMs, MIN_PULL_EXPIRES_MS);
    const out: QueueMessage[] = [];
    try {
      out.push(...(await this.#fetch(c, 1, expires)));
      if (out.length === 0 || opts.max === 1) return out;
      const waiting = (await c.info()).num_pending;
      if (waiting > 0)
        out.push(...(await this.#fetch(c, Math.min(opts.max - 1, waiting), MIN_PULL_EXPIRES_MS)));
      return out;
    } catch (err) {
      if (this.#ctx.retry.closed()) throw err;
      // Bind afresh next time: a restarted server may have lost (or never had) the consumer.
      this.#consumers.delete(group);
      const now = performance.now();
      if (now - this.#lastPullLog >= PULL_LOG_EVERY_MS) {
        this.#lastPullLog = now;
        this.#ctx.log(
          `NATS at ${this.#ctx.retry.server}: pulling from ${this.#names.stream} failed (${(err as Error).message}); retrying`,
        );
      }
      // What did arrive is handed on; the rest waits for the next pull.
      if (out.length === 0) await new Promise((r) => setTimeout(r, Math.min(expires, 1_000)));
      return out;
    }
  }

  /**
   * Create (or align) the durable consumer `group` without pulling anything: what the first
   * `pull` does, done ahead by `rlaif nats-init` so that the consumer exists, and its lag can be
   * read (KEDA), while no worker runs.
   */
  async ensureConsumer(group: string): Promise<void> {
    await this.#consumer(consumerName(group));
  }

  async pending(): Promise<number> {
    return retryTransient(
      `reading ${this.#names.stream}`,
      this.#ctx.retry,
      async () => (await this.#ctx.jsm.streams.info(this.#names.stream)).state.messages,
    );
  }

  async purge(): Promise<void> {
    await retryTransient(`purging ${this.#names.stream}`, this.#ctx.retry, () =>
      this.#ctx.jsm.streams.purge(this.#names.stream),
    );
  }

  /** One fetch, stopped if it neither delivers nor ends well past its expiry (a lost connection). */
  async #fetch(c: Consumer, max: number, expires: number): Promise<QueueMessage[]> {
    const out: QueueMessage[] = [];
    const iter = await c.fetch({ max_messages: max, expires });
    const timer = setTimeout(() => iter.stop(), expires + FETCH_GRACE_MS);
    try {
      for await (const jm of iter) out.push(this.#toMessage(jm));
    } finally {
      clearTimeout(timer);
    }
    return out;
  }

  #toMessage(jm: JsMsg): QueueMessage {
    const { nc, retry, log } = this.#ctx;
    const msgId = jm.headers?.get(MSG_ID_HEADER) ?? "";
    // A nak or in-progress signal lost to a disconnect only means the ack wait decides instead.
    const signal = async (what: string, send: () => void) => {
      try {
        send();
        await nc.flush();
      } catch (err) {
        log(
          `NATS at ${retry.server}: ${what} of ${msgId} not sent (${(err as Error).message}); the ack wait redelivers it`,
        );
      }
    };
    return {
      data: jm.data,
      headers: fromNatsHeaders(jm.headers),
      msgId,
      deliveryCount: jm.info.deliveryCount,
      // Double ack: resolve only once the server removed it, so `pending()` right after is exact.
      // An ack the server does not confirm in time (it restarted meanwhile) is sent once more
      // plainly; if that is lost too the ack wait redelivers the message, which every consumer
      // drops as already applied (ids), so an unconfirmed ack costs time, never correctness.
      ack: async () => {
        try {
          await retryTransient(
            `ack of ${msgId}`,
            { ...retry, retryMs: Math.min(retry.retryMs, ACK_CONFIRM_MS) },
            () => jm.ackAck({ timeout: ACK_REPLY_TIMEOUT_MS }),
          );
        } catch (err) {
          if (!(err instanceof BusUnavailableError)) throw err;
          await signal("ack", () => jm.ack());
        }
      },
      nak: (delayMs?: number) => signal("nak", () => jm.nak(delayMs && delayMs > 0 ? delayMs : undefined)),
      inProgress: () => signal("in-progress", () => jm.working()),
    };
  }

  #consumer(group: string): Promise<Consumer> {
    let c = this.#consumers.get(group);
    if (!c) {
      c = this.#ensureConsumer(group);
      c.catch(() => this.#consumers.delete(group));
      this.#consumers.set(group, c);
    }
    return c;
  }

  /** Create or align the durable consumer, then bind to it; a second group is refused. */
  async #ensureConsumer(group: string): Promise<Consumer> {
    const { js, ackWaitMs, retry } = this.#ctx;
    const stream = this.#names.stream;
    const ackWait = nanos(ackWaitMs);
    try {
      await retryTransient(`binding consumer ${group} of ${stream}`, retry, () =>
        this.#createOrAlign(group, ackWait),
      );
    } catch (err) {
      if (WQ_CONSUMER_CONFLICT_CODES.has(apiCode(err) ?? 0)) {
        throw new RlaifError(
          `queue "${this.name}" is already consumed by another group; a work queue has one consumer group, not "${group}"`,
          { cause: err },
        );
      }
      throw err;
    }
    return retryTransient(`binding consumer ${group} of ${stream}`, retry, () =>
      js.consumers.get(stream, group),
    );
  }

  /** Create the durable consumer, or align its ack wait with ours (one attempt). */
  async #createOrAlign(group: string, ackWait: number): Promise<void> {
    const { jsm } = this.#ctx;
    const stream = this.#names.stream;
    const existing = await jsm.consumers.info(stream, group).catch((err: unknown) => {
      if (apiCode(err) === JetStreamApiCodes.ConsumerNotFound) return null;
      throw err;
    });
    if (!existing) {
      await jsm.consumers.add(stream, {
        durable_name: group,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: ackWait,
        max_deliver: -1,
      });
    } else if (existing.config.ack_wait !== ackWait) {
      await jsm.consumers.update(stream, group, { ack_wait: ackWait });
    }
  }
}

/** NATS headers → `Headers`, without JetStream's own `Nats-Msg-Id` (exposed as `msgId`). */
function fromNatsHeaders(h: MsgHdrs | undefined): Headers {
  const out: Headers = {};
  if (!h) return out;
  for (const [key, values] of h) {
    if (key !== MSG_ID_HEADER && values.length > 0) out[key] = values.join(",");
  }
  return out;
}
