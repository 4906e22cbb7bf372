/**
 * A JetStream work-queue stream behind the `Queue` contract, used by `NatsBus`.
 *
 * One stream per queue (work-queue retention: a message is removed once acked), one durable pull
 * consumer per consumer group (explicit ack, `ack_wait`, unlimited redeliveries). Publishing sets
 * `Nats-Msg-Id`, so the stream's duplicate window drops re-publishes after a crash.
 */

import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type MsgHdrs, type NatsConnection, nanos, headers as natsHeaders } from "@nats-io/transport-node";
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
import { consumerName, type QueueNames } from "./subjects.js";

/**
 * JetStream refuses pull requests that expire in under 1 s, so `pull` waits at least this long
 * when nothing is available, even if `expiresMs` is shorter.
 */
export const MIN_PULL_EXPIRES_MS = 1_000;

/** JetStream's header carrying the idempotency key; surfaced as `QueueMessage.msgId`. */
const MSG_ID_HEADER = "Nats-Msg-Id";
/** JetStream API error codes for a second consumer on a work-queue stream (unfiltered / overlapping). */
const WQ_CONSUMER_CONFLICT_CODES = new Set([10099, 10100]);

/** What a `NatsQueue` needs from its `NatsBus`. */
export interface NatsQueueContext {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  ackWaitMs: number;
  dedupWindowMs: number;
}

/** `Queue` on a JetStream work-queue stream; create with `NatsQueue.open`. */
export class NatsQueue implements Queue {
  readonly name: QueueName;
  readonly #names: QueueNames;
  readonly #ctx: NatsQueueContext;
  readonly #consumers = new Map<string, Promise<Consumer>>();

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
    };
    const existing = await ctx.jsm.streams.info(names.stream).catch((err: unknown) => {
      if (apiCode(err) === JetStreamApiCodes.StreamNotFound) return null;
      throw err;
    });
    if (!existing) {
      await ctx.jsm.streams.add(wanted);
    } else if (
      existing.config.duplicate_window !== wanted.duplicate_window ||
      existing.config.subjects?.join() !== wanted.subjects.join()
    ) {
      await ctx.jsm.streams.update(names.stream, { ...existing.config, ...wanted });
    }
    return new NatsQueue(name, names, ctx);
  }

  async publish(data: Uint8Array, opts: PublishOptions): Promise<PublishAck> {
    if (!opts.msgId) throw new ValidationError("msgId", "must be a non-empty string");
    const h = natsHeaders();
    for (const [key, value] of Object.entries(opts.headers ?? {})) h.set(key, value);
    const ack = await this.#ctx.js.publish(this.#names.subject, data, { msgID: opts.msgId, headers: h });
    return { seq: ack.seq, duplicate: ack.duplicate };
  }

  /**
   * Wait (at least `MIN_PULL_EXPIRES_MS`) for one message, then take up to `max - 1` more of those
   * already waiting. Two fetches because a single JetStream fetch of `max` would hold the caller
   * until `max` arrive or the request expires, instead of returning what is there.
   */
  async pull(consumer: string, opts: PullOptions): Promise<QueueMessage[]> {
    if (!Number.isInteger(opts.max) || opts.max < 1) {
      throw new ValidationError("max", `${opts.max} must be a positive integer`);
    }
    const c = await this.#consumer(consumerName(consumer));
    const expires = Math.max(opts.expiresMs, MIN_PULL_EXPIRES_MS);
    const first = await this.#fetch(c, 1, expires);
    if (first.length === 0 || opts.max === 1) return first;
    const waiting = (await c.info()).num_pending;
    const more =
      waiting > 0 ? await this.#fetch(c, Math.min(opts.max - 1, waiting), MIN_PULL_EXPIRES_MS) : [];
    return [...first, ...more];
  }

  async pending(): Promise<number> {
    return (await this.#ctx.jsm.streams.info(this.#names.stream)).state.messages;
  }

  async purge(): Promise<void> {
    await this.#ctx.jsm.streams.purge(this.#names.stream);
  }

  async #fetch(c: Consumer, max: number, expires: number): Promise<QueueMessage[]> {
    const out: QueueMessage[] = [];
    for await (const jm of await c.fetch({ max_messages: max, expires })) out.push(this.#toMessage(jm));
    return out;
  }

  #toMessage(jm: JsMsg): QueueMessage {
    const nc = this.#ctx.nc;
    return {
      data: jm.data,
      headers: fromNatsHeaders(jm.headers),
      msgId: jm.headers?.get(MSG_ID_HEADER) ?? "",
      deliveryCount: jm.info.deliveryCount,
      // Double ack: resolve only once the server removed it, so `pending()` right after is exact.
      ack: async () => {
        await jm.ackAck();
      },
      nak: async (delayMs?: number) => {
        jm.nak(delayMs && delayMs > 0 ? delayMs : undefined);
        await nc.flush();
      },
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

  /** Create the durable consumer, or align its ack wait with ours; then bind to it. */
  async #ensureConsumer(group: string): Promise<Consumer> {
    const { jsm, js, ackWaitMs } = this.#ctx;
    const stream = this.#names.stream;
    const ackWait = nanos(ackWaitMs);
    const existing = await jsm.consumers.info(stream, group).catch((err: unknown) => {
      if (apiCode(err) === JetStreamApiCodes.ConsumerNotFound) return null;
      throw err;
    });
    try {
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
    } catch (err) {
      if (WQ_CONSUMER_CONFLICT_CODES.has(apiCode(err) ?? 0)) {
        throw new RlaifError(
          `queue "${this.name}" is already consumed by another group; a work queue has one consumer group, not "${group}"`,
          { cause: err },
        );
      }
      throw err;
    }
    return js.consumers.get(stream, group);
  }
}

/** The JetStream API error code of `err`, if it is one. */
export function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
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
