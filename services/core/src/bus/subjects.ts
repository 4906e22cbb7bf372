/**
 * Every NATS name the system uses — streams, subjects, durable consumers, KV and Object Store
 * buckets, KV keys and weight object names — in one module.
 *
 * Why one module: the services run as separate processes (and k8s NetworkPolicies / NATS
 * permissions are written against these names), so a name spelled twice is a name that can drift.
 * Every producer and consumer derives its names from `subjectsFor(namespace)`.
 *
 * Why a namespace: concurrent runs (and tests) on one NATS server must not share streams, durable
 * consumers or the latest-weights pointer. A namespace prefixes every stream, subject and bucket;
 * without one, the production names below are used unchanged.
 */

import { ValidationError } from "../errors.js";
import type { QueueName } from "./bus.js";

/** The NATS names of one work queue: the JetStream stream and the single subject it captures. */
export interface QueueNames {
  /** JetStream stream name (no dots, upper case by convention). */
  readonly stream: string;
  /** The subject published to; the stream captures exactly this subject. */
  readonly subject: string;
}

/** All names for one namespace; see `subjectsFor`. */
export interface Subjects {
  /** The namespace these names were derived from ("" when none). */
  readonly namespace: string;
  /** Work-queue streams keyed by the bus's queue names. */
  readonly queues: Readonly<Record<QueueName, QueueNames>>;
  /** KV bucket holding the latest-weights pointer and run state. */
  readonly kvBucket: string;
  /** Object Store bucket holding weight blobs. */
  readonly objectBucket: string;
}

/**
 * KV key of the latest-weights pointer. Policy replicas watch it and the Optimizer moves it with
 * compare-and-set, so both sides must spell it identically.
 */
export const LATEST_WEIGHTS_KEY = "weights.latest";

/**
 * Durable consumer group of the jobs queue. Every Rollout worker pulls as this group, so they
 * share the jobs; the KEDA ScaledObject in k8s/ scales Rollout on this consumer's lag. Consumers
 * live inside a (namespaced) stream, so the name is the same in every namespace.
 */
export const ROLLOUT_CONSUMER = "rollout";

/** Durable consumer group of the trajectories queue: the Optimizer's step gatherer. */
export const OPTIMIZER_CONSUMER = "optimizer";

/** Production names (no namespace), documented in one place for operators and k8s manifests. */
const BASE = {
  jobsStream: "RLAIF_JOBS",
  jobsSubject: "rlaif.jobs",
  trajectoriesStream: "RLAIF_TRAJECTORIES",
  trajectoriesSubject: "rlaif.trajectories",
  deadLettersStream: "RLAIF_DEAD_LETTERS",
  deadLettersSubject: "rlaif.dead-letters",
  kvBucket: "rlaif_state",
  objectBucket: "rlaif_weights",
} as const;

/** Namespaces become one subject token and part of stream/bucket names, so they must be plain. */
const NAMESPACE_RE = /^[A-Za-z0-9_-]{1,48}$/;
/** Durable consumer names and run ids: one NATS token, no wildcards or dots. */
const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Names for a namespace (or the production names when `namespace` is empty or omitted).
 * With namespace `t1`: stream `t1_RLAIF_JOBS`, subject `t1.rlaif.jobs`, KV `t1_rlaif_state`,
 * objects `t1_rlaif_weights`. Throws `ValidationError` for a namespace NATS cannot carry.
 */
export function subjectsFor(namespace = ""): Subjects {
  if (namespace !== "" && !NAMESPACE_RE.test(namespace)) {
    throw new ValidationError(
      "namespace",
      `"${namespace}" must match ${NAMESPACE_RE} (letters, digits, _ -)`,
    );
  }
  const stream = (name: string) => (namespace ? `${namespace}_${name}` : name);
  const subject = (name: string) => (namespace ? `${namespace}.${name}` : name);
  return {
    namespace,
    queues: {
      jobs: { stream: stream(BASE.jobsStream), subject: subject(BASE.jobsSubject) },
      trajectories: { stream: stream(BASE.trajectoriesStream), subject: subject(BASE.trajectoriesSubject) },
      deadLetters: { stream: stream(BASE.deadLettersStream), subject: subject(BASE.deadLettersSubject) },
    },
    kvBucket: stream(BASE.kvBucket),
    objectBucket: stream(BASE.objectBucket),
  };
}

/**
 * The durable consumer name of a consumer group. Validated here because a bad name would only
 * fail deep inside the JetStream API with a less helpful message.
 */
export function consumerName(group: string): string {
  if (!TOKEN_RE.test(group)) {
    throw new ValidationError("consumer", `"${group}" must match ${TOKEN_RE} (letters, digits, _ -)`);
  }
  return group;
}

/** KV key holding the state of one training run, so `rlaif` commands can find a run by id. */
export function runStateKey(runId: string): string {
  if (!TOKEN_RE.test(runId)) {
    throw new ValidationError("runId", `"${runId}" must match ${TOKEN_RE} (letters, digits, _ -)`);
  }
  return `runs.${runId}.state`;
}

/**
 * What a weights object of one version holds: the full blob (`safetensors`), a delta on the
 * parent's blob (`delta`: the header and the changed tensors, not a valid safetensors file) or
 * the version's signed manifest (`manifest`, read by a replica rebuilding a delta chain).
 */
export type WeightsObjectKind = "safetensors" | "delta" | "manifest";

/**
 * Object Store name of weights version `version` with content hash `sha256` (of the full blob).
 * Zero-padded so names sort by version, ending in `.safetensors` for the full layout (readable
 * from Python), and carrying the hash so two publishers racing for one version never overwrite
 * each other's blob (the loser of the pointer's compare-and-set deletes its own). A delta and a
 * manifest of the same version differ only in the ending (`kind`).
 */
export function weightsObjectName(
  version: number,
  sha256: string,
  kind: WeightsObjectKind = "safetensors",
): string {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw new ValidationError("version", `${version} must be a non-negative integer`);
  }
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new ValidationError("sha256", "must be 64 lower-case hex digits");
  return `weights/v${String(version).padStart(8, "0")}-${sha256.slice(0, 16)}.${kind}`;
}

/** What {@link weightsObjectName} writes, with the version's digits captured. */
const WEIGHTS_OBJECT_RE = /^weights\/v(\d{8,16})-[0-9a-f]{16}\.(safetensors|delta|manifest)$/;

/**
 * The version of a weights object name written by {@link weightsObjectName}, or null for any
 * other name, so retention can tell weights versions apart from everything else in the bucket.
 */
export function weightsObjectVersion(name: string): number | null {
  const m = WEIGHTS_OBJECT_RE.exec(name);
  const version = m ? Number(m[1]) : Number.NaN;
  return Number.isSafeInteger(version) ? version : null;
}

/** NATS KV key syntax: tokens of letters, digits, `_ - / =` separated by single dots. */
const KV_KEY_RE = /^[-/=\w]+(\.[-/=\w]+)*$/;

/**
 * Throws `ValidationError` unless `key` is a valid KV key. Both bus implementations call it, so a
 * key that works embedded also works on NATS (which would reject it with an untyped error).
 */
export function assertKvKey(key: string): void {
  if (!KV_KEY_RE.test(key)) {
    throw new ValidationError("key", `"${key}" is not a KV key (letters, digits, _ - / = and single dots)`);
  }
}
