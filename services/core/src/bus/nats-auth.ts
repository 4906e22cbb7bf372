/**
 * NATS users per service, with publish/subscribe allow-lists derived from `subjects.ts` (the one
 * place names are defined), so that holding one service's credentials grants only that service's
 * part of the bus:
 *
 * - rollout: pull prompt jobs as the `rollout` group, publish trajectories and dead-lettered jobs. No KV, no objects:
 *   it cannot move the latest-weights pointer nor write a weights blob.
 * - policy: read the KV bucket and the weights objects (and create them if it is first up). It
 *   cannot publish anything but JetStream API reads, acks and flow control.
 * - optimizer: everything the run needs: both queues, the KV bucket, the weights objects.
 *
 * JetStream is reached through `$JS.API.<OP>.<stream>…` subjects, so each grant names the
 * operation and the stream; nothing grants deleting a stream or another stream's consumers.
 * Every user has its own inbox prefix (`_INBOX_<user>`), because replies (KV reads, weight
 * chunks) arrive on inboxes: a shared `_INBOX.>` would let one service read another's replies.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { credsAuthenticator } from "@nats-io/transport-node";
import { ConfigError } from "../errors.js";
import {
  consumerName,
  OPTIMIZER_CONSUMER,
  ROLLOUT_CONSUMER,
  type Subjects,
  subjectsFor,
} from "./subjects.js";

/** The services that use NATS (the Feedback service does not). */
export const NATS_ROLES = ["optimizer", "policy", "rollout"] as const;
/** One of {@link NATS_ROLES}. */
export type NatsRole = (typeof NATS_ROLES)[number];

/** The environment variables a service's NATS user and password may come from (kept out of argv). */
export const NATS_USER_ENV = "RLAIF_NATS_USER";
/** See {@link NATS_USER_ENV}. */
export const NATS_PASSWORD_ENV = "RLAIF_NATS_PASSWORD";

/** A user's allow-lists, in nats-server's `permissions` shape. */
export interface NatsPermissions {
  readonly publish: { readonly allow: readonly string[] };
  readonly subscribe: { readonly allow: readonly string[] };
}

/** One user of the server's `authorization` block. */
export interface NatsUser {
  readonly user: string;
  readonly password: string;
  readonly permissions: NatsPermissions;
}

/** The inbox prefix of `user`: its replies arrive below it, and only it may subscribe there. */
export function inboxPrefixOf(user: string): string {
  return `_INBOX_${user}`;
}

const api = (...tokens: string[]) => `$JS.API.${tokens.join(".")}`;

/** Create (idempotent: the same config again is no change) and look at a stream. */
function openStream(stream: string): string[] {
  return [api("STREAM", "INFO", stream), api("STREAM", "CREATE", stream)];
}

/** Also change its config and drop its messages: the owner of a stream. */
function manageStream(stream: string): string[] {
  return [...openStream(stream), api("STREAM", "UPDATE", stream), api("STREAM", "PURGE", stream)];
}

/** Read a KV or Object Store stream: direct and stored-message gets, ordered consumers. */
function readStream(stream: string): string[] {
  return [
    api("STREAM", "MSG", "GET", stream),
    api("DIRECT", "GET", stream),
    api("DIRECT", "GET", stream, ">"),
    api("CONSUMER", "CREATE", stream),
    api("CONSUMER", "CREATE", stream, ">"),
    api("CONSUMER", "INFO", stream, "*"),
    api("CONSUMER", "DELETE", stream, "*"),
    `$JS.FC.${stream}.>`,
  ];
}

/** Pull from a work queue as durable `group`, and ack what was pulled. */
function consume(stream: string, group: string): string[] {
  const c = consumerName(group);
  return [
    api("CONSUMER", "CREATE", stream, c),
    api("CONSUMER", "CREATE", stream, c, ">"),
    api("CONSUMER", "DURABLE", "CREATE", stream, c),
    api("CONSUMER", "INFO", stream, c),
    api("CONSUMER", "MSG", "NEXT", stream, c),
    `$JS.ACK.${stream}.${c}.>`,
  ];
}

/** JetStream's stream names of a KV and an Object Store bucket. */
function bucketStreams(s: Subjects): { kv: string; objects: string } {
  return { kv: `KV_${s.kvBucket}`, objects: `OBJ_${s.objectBucket}` };
}

/** The publish allow-list of `role` (subscribe is only its own inbox). */
function publishAllow(role: NatsRole, s: Subjects): string[] {
  const { jobs, trajectories, deadLetters } = s.queues;
  const buckets = bucketStreams(s);
  const queues = [
    ...openStream(jobs.stream),
    ...openStream(trajectories.stream),
    ...openStream(deadLetters.stream),
  ];
  if (role === "rollout") {
    // A job delivered too often goes to the dead-letter queue (rollout-worker.ts).
    return [...queues, ...consume(jobs.stream, ROLLOUT_CONSUMER), trajectories.subject, deadLetters.subject];
  }
  const read = [
    ...openStream(buckets.kv),
    ...readStream(buckets.kv),
    ...openStream(buckets.objects),
    ...readStream(buckets.objects),
  ];
  if (role === "policy") return read;
  return [
    ...manageStream(jobs.stream),
    ...manageStream(trajectories.stream),
    ...manageStream(deadLetters.stream),
    jobs.subject,
    ...consume(trajectories.stream, OPTIMIZER_CONSUMER),
    ...read,
    ...manageStream(buckets.kv),
    ...manageStream(buckets.objects),
    `$KV.${s.kvBucket}.>`,
    `$O.${s.objectBucket}.>`,
  ];
}

/** The allow-lists of the user of service `role`, for the names of `subjects`. */
export function natsPermissions(
  role: NatsRole,
  user: string,
  subjects: Subjects = subjectsFor(),
): NatsPermissions {
  const publish = [api("INFO"), ...new Set(publishAllow(role, subjects))];
  return { publish: { allow: publish }, subscribe: { allow: [`${inboxPrefixOf(user)}.>`] } };
}

/**
 * One user per service, named after it, with a fresh random password each: what `rlaif up` and
 * the tests give their throwaway server.
 */
export function serviceUsers(subjects: Subjects = subjectsFor()): Record<NatsRole, NatsUser> {
  const users = {} as Record<NatsRole, NatsUser>;
  for (const role of NATS_ROLES) {
    users[role] = {
      user: role,
      password: randomBytes(18).toString("base64url"),
      permissions: natsPermissions(role, role, subjects),
    };
  }
  return users;
}

/**
 * The `authorization` block of a nats-server config for `users`, as JSON (which the server's
 * config parser reads; quoting keeps `$JS…` from being read as a variable).
 */
export function authorizationConfig(users: readonly NatsUser[]): string {
  return `authorization: ${JSON.stringify({ users }, null, 2)}\n`;
}

/** The environment variable a deployed nats-server reads `role`'s password from. */
export function passwordEnvOf(role: NatsRole): string {
  return `NATS_${role.toUpperCase()}_PASSWORD`;
}

/**
 * The `authorization` block of a deployed server (k8s/base/nats.yaml): the same users and
 * permissions, with each password read from {@link passwordEnvOf} (a Secret in the pod's
 * environment), so no password is written into a manifest. A NATS variable must be unquoted.
 */
export function deployedAuthorizationConfig(subjects: Subjects = subjectsFor()): string {
  const users = NATS_ROLES.map((role) => ({
    user: role,
    password: `$${passwordEnvOf(role)}`,
    permissions: natsPermissions(role, role, subjects),
  }));
  return authorizationConfig(users).replace(/"password": "\$(\w+)"/g, '"password": $$$1');
}

/** How a client authenticates (nats.js connect options), and where its replies arrive. */
export interface NatsClientAuth {
  readonly user?: string;
  readonly pass?: string;
  readonly authenticator?: ReturnType<typeof credsAuthenticator>;
  readonly inboxPrefix?: string;
}

/** Where a service's NATS credentials may be given. */
export interface NatsCredentialSources {
  readonly natsUser: string;
  readonly natsPassword: string;
  readonly natsCreds: string;
}

/**
 * The client authentication the settings ask for: a creds file (`services.natsCreds`), or a user
 * (`services.natsUser`, else RLAIF_NATS_USER) with its password (`services.natsPassword`, else
 * RLAIF_NATS_PASSWORD); none when neither is set. ConfigError naming the setting when the creds
 * file cannot be read or a user comes without a password.
 */
export function natsClientAuth(
  s: NatsCredentialSources,
  env: NodeJS.ProcessEnv = process.env,
): NatsClientAuth {
  const user = s.natsUser || env[NATS_USER_ENV] || "";
  if (s.natsCreds) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(s.natsCreds);
    } catch (err) {
      throw new ConfigError(`services.natsCreds ${s.natsCreds}: ${(err as Error).message}`, { cause: err });
    }
    return {
      authenticator: credsAuthenticator(creds),
      ...(user ? { inboxPrefix: inboxPrefixOf(user) } : {}),
    };
  }
  if (!user) return {};
  const pass = s.natsPassword || env[NATS_PASSWORD_ENV] || "";
  if (!pass) {
    throw new ConfigError(
      `NATS user "${user}" needs a password: set ${NATS_PASSWORD_ENV} (or services.natsPassword / --nats-password)`,
    );
  }
  return { user, pass, inboxPrefix: inboxPrefixOf(user) };
}
