/**
 * Prepare a NATS server for a deployment before (or while) the services start: the three
 * work-queue streams, the KV and Object Store buckets, and the Rollout's durable consumer of the
 * jobs stream. What `rlaif nats-init` (the k8s init Job, k8s/base/nats-init.yaml) runs.
 *
 * Why ahead of the services, which create the same things on first use: on a JetStream cluster
 * the streams must be created with 3 replicas (a service would create R1), and the `rollout`
 * consumer must exist while no Rollout pod runs, or KEDA cannot read its lag and a Rollout scaled
 * to zero is never sized by its queue (docs/kubernetes.md#scale-to-zero).
 *
 * Idempotent by construction: every step is the bus's own create-or-align (nats-bus.ts,
 * nats-queue.ts), which leaves a stream, bucket or consumer that already has the wanted config
 * untouched, so running the Job again (every `kubectl apply`) changes nothing.
 */
import { ValidationError } from "../errors.js";
import type { QueueName } from "./bus.js";
import type { NatsClientAuth } from "./nats-auth.js";
import { NatsBus } from "./nats-bus.js";
import { ROLLOUT_CONSUMER, subjectsFor } from "./subjects.js";

/**
 * Which half of the preparation to run. Each needs another NATS user (nats-auth.ts): `streams`
 * the Optimizer's (it manages the streams and buckets), `consumer` the Rollout's (only it may
 * create its consumer); `all` needs both grants (a server without users, as in tests).
 */
export const NATS_INIT_PARTS = ["streams", "consumer", "all"] as const;
/** One of {@link NATS_INIT_PARTS}. */
export type NatsInitPart = (typeof NATS_INIT_PARTS)[number];

/** Every queue of the bus, in the order they are created. */
const QUEUES: readonly QueueName[] = ["jobs", "trajectories", "deadLetters"];

/** Options of {@link initNats}. */
export interface NatsInitOptions {
  /** The server, e.g. `nats://nats:4222`. */
  readonly url: string;
  /** What to prepare. */
  readonly part: NatsInitPart;
  /** JetStream replicas of every stream and bucket (`streams`/`all` only); unset: the server's default. */
  readonly replicas?: number;
  /** The user to log in as (nats-auth.ts `natsClientAuth`). */
  readonly auth?: NatsClientAuth;
  /** Name prefix (subjects.ts), for tests sharing a server. */
  readonly namespace?: string;
  /** Where reconnects are logged. */
  readonly log?: (line: string) => void;
}

/** What was prepared, by JetStream name, for the Job's log. */
export interface NatsInitReport {
  /** Streams (queues, then `KV_…`, `OBJ_…`) now present with the wanted config. */
  readonly streams: string[];
  /** Durable consumers now present, as `STREAM/consumer`. */
  readonly consumers: string[];
}

/** Create or align what `part` names; throws the bus's errors (unreachable, permission refused). */
export async function initNats(opts: NatsInitOptions): Promise<NatsInitReport> {
  if (!(NATS_INIT_PARTS as readonly string[]).includes(opts.part)) {
    throw new ValidationError("part", `"${opts.part}" must be one of ${NATS_INIT_PARTS.join(", ")}`);
  }
  if (opts.part === "consumer" && opts.replicas !== undefined) {
    // The Rollout's user may not update streams: replicas belong to the `streams` part.
    throw new ValidationError(
      "replicas",
      "applies to the streams part only (the consumer takes its stream's)",
    );
  }
  const bus = await NatsBus.connect(opts.url, {
    name: `rlaif-nats-init-${opts.part}`,
    ...(opts.namespace === undefined ? {} : { namespace: opts.namespace }),
    ...(opts.auth === undefined ? {} : { auth: opts.auth }),
    ...(opts.replicas === undefined ? {} : { replicas: opts.replicas }),
    ...(opts.log === undefined ? {} : { log: opts.log }),
  });
  const names = subjectsFor(opts.namespace);
  const streams: string[] = [];
  const consumers: string[] = [];
  try {
    if (opts.part !== "consumer") {
      for (const q of QUEUES) {
        await bus.queue(q);
        streams.push(names.queues[q].stream);
      }
      await bus.kv();
      streams.push(`KV_${names.kvBucket}`);
      await bus.objects();
      streams.push(`OBJ_${names.objectBucket}`);
    }
    if (opts.part !== "streams") {
      await (await bus.queue("jobs")).ensureConsumer(ROLLOUT_CONSUMER);
      consumers.push(`${names.queues.jobs.stream}/${ROLLOUT_CONSUMER}`);
    }
  } finally {
    await bus.close();
  }
  return { streams, consumers };
}
