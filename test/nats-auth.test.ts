/**
 * NATS users per service on a real `nats-server` (started here with the config that
 * bus/nats-server.ts writes): a client without credentials cannot connect; each service's user
 * can do its own part of a run through the real NatsBus; the Rollout's user writing the weights
 * KV or blobs, queueing jobs, or reading another user's inbox is refused with a permissions
 * violation.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Bus } from "../services/core/src/bus/bus.js";
import {
  deployedAuthorizationConfig,
  inboxPrefixOf,
  NATS_ROLES,
  type NatsClientAuth,
  type NatsRole,
  natsClientAuth,
  passwordEnvOf,
  serviceUsers,
} from "../services/core/src/bus/nats-auth.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { type NatsServerHandle, startNatsServer } from "../services/core/src/bus/nats-server.js";
import {
  LATEST_WEIGHTS_KEY,
  OPTIMIZER_CONSUMER,
  ROLLOUT_CONSUMER,
  runStateKey,
  subjectsFor,
} from "../services/core/src/bus/subjects.js";
import { ConfigError, RlaifError } from "../services/core/src/errors.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasNats = requireTool(TOOLS.natsServer);
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe.skipIf(!hasNats)("nats auth", () => {
  const users = serviceUsers();
  const names = subjectsFor();
  let server: NatsServerHandle;
  const open: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    server = await startNatsServer({ users: Object.values(users) });
  }, 30_000);
  afterAll(async () => {
    for (const c of open) await c.close().catch(() => undefined);
    await server?.stop();
  });

  /** A NatsBus as service `role`, the way `rlaif serve` connects (user and password from the environment). */
  async function busAs(role: NatsRole): Promise<Bus> {
    const env = { RLAIF_NATS_USER: users[role].user, RLAIF_NATS_PASSWORD: users[role].password };
    const bus = await NatsBus.connect(server.url, {
      name: role,
      auth: natsClientAuth({ natsUser: "", natsPassword: "", natsCreds: "" }, env),
    });
    open.push(bus);
    return bus;
  }

  /** A bare connection as `role`, to try what the bus would never do. */
  async function rawAs(role: NatsRole): Promise<NatsConnection> {
    const { user, password } = users[role];
    const nc = await connect({ servers: server.url, user, pass: password, inboxPrefix: inboxPrefixOf(user) });
    open.push({ close: () => nc.close() });
    return nc;
  }

  /** The error `call` rejects with, as text. */
  const refusal = (call: Promise<unknown>) =>
    call.then(
      () => "accepted",
      (err: Error) => `${err.name}: ${err.message}`,
    );

  it("nats auth - a client without credentials, or with a wrong password, cannot connect", async () => {
    const refused: NatsClientAuth[] = [{}, { user: "rollout", pass: "not-the-password" }];
    for (const auth of refused) {
      const err = await NatsBus.connect(server.url, { auth }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RlaifError);
      expect((err as Error).message).toMatch(
        /^cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: .*Authorization/i,
      );
    }
    expect(() => natsClientAuth({ natsUser: "rollout", natsPassword: "", natsCreds: "" }, {})).toThrow(
      ConfigError,
    );
  });

  it("nats auth - each service's user does its own part of a run through the bus", async () => {
    const [policy, rollout, optimizer] = [
      await busAs("policy"),
      await busAs("rollout"),
      await busAs("optimizer"),
    ];
    // Whoever is up first creates the streams and buckets it uses.
    const policyKv = await policy.kv();
    const policyObjects = await policy.objects();
    const seen: string[] = [];
    const stop = await policyKv.watch(LATEST_WEIGHTS_KEY, (e) => seen.push(dec(e.value)));
    const rolloutJobs = await rollout.queue("jobs");
    const rolloutTrajectories = await rollout.queue("trajectories");

    // Optimizer: publish a weights blob and move the pointer, record run state, queue a job.
    const kv = await optimizer.kv();
    const info = await (await optimizer.objects()).put("weights/v1.safetensors", enc("blob-v1"));
    await kv.update(LATEST_WEIGHTS_KEY, enc(info.name), 0);
    await kv.put(runStateKey("r1"), enc("running"));
    const jobs = await optimizer.queue("jobs");
    await jobs.purge();
    await jobs.publish(enc("job-1"), { msgId: "r1.1.0" });

    // Policy: sees the pointer, reads the blob.
    for (let i = 0; seen.length === 0 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
    stop();
    expect(seen).toEqual([info.name]);
    expect(dec((await policyKv.get(LATEST_WEIGHTS_KEY))?.value ?? new Uint8Array())).toBe(info.name);
    expect((await policyObjects.info(info.name))?.sha256).toBe(info.sha256);
    expect(dec(await policyObjects.get(info.name))).toBe("blob-v1");

    // Rollout: takes the job, publishes its trajectory; the Optimizer consumes it.
    const [job] = await rolloutJobs.pull(ROLLOUT_CONSUMER, { max: 4, expiresMs: 2000 });
    expect(job && dec(job.data)).toBe("job-1");
    await rolloutTrajectories.publish(enc("trajectory-1"), { msgId: "r1.1.0.t" });
    await job?.ack();
    const trajectories = await optimizer.queue("trajectories");
    const [t] = await trajectories.pull(OPTIMIZER_CONSUMER, { max: 4, expiresMs: 2000 });
    expect(t && dec(t.data)).toBe("trajectory-1");
    await t?.ack();
    expect(await jobs.pending()).toBe(0);
    await (await optimizer.objects()).delete(info.name);
  }, 60_000);

  it("nats auth - the Rollout's user cannot write the weights KV or blobs, queue jobs, or read other inboxes", async () => {
    const nc = await rawAs("rollout");
    const { kvBucket, objectBucket, queues } = names;
    // A bare request fails as a RequestError; JetStream calls pass the PermissionViolationError on.
    const violation =
      /(?:RequestError|PermissionViolationError): Permissions Violation for Publish to "([^"]+)"/;
    for (const subject of [
      `$KV.${kvBucket}.${LATEST_WEIGHTS_KEY}`,
      `$O.${objectBucket}.C.forged`,
      queues.jobs.subject,
      `$JS.API.STREAM.DELETE.KV_${kvBucket}`,
      `$JS.API.STREAM.PURGE.${queues.jobs.stream}`,
      `$JS.API.CONSUMER.DELETE.${queues.trajectories.stream}.${OPTIMIZER_CONSUMER}`,
    ]) {
      const m = violation.exec(await refusal(nc.request(subject, enc("forged"), { timeout: 5000 })));
      expect(m?.[1], subject).toBe(subject);
    }
    // Through the bus, the KV is out of reach from the first call.
    const rollout = await busAs("rollout");
    expect(await refusal(rollout.kv())).toMatch(
      /Permissions Violation for Publish to "\$JS\.API\.STREAM\.INFO\.KV_/,
    );
    // Replies to the Policy (KV reads, weight chunks) arrive on its inbox: others cannot listen there.
    const sub = nc.subscribe(`${inboxPrefixOf("policy")}.>`);
    expect(String(await sub.closed)).toMatch(
      /PermissionViolationError: Permissions Violation for Subscription to "_INBOX_policy\.>"/,
    );
    // The Policy's user cannot move the pointer either.
    const policy = await rawAs("policy");
    expect(
      await refusal(policy.request(`$KV.${kvBucket}.${LATEST_WEIGHTS_KEY}`, enc("x"), { timeout: 5000 })),
    ).toMatch(violation);
  }, 30_000);

  it("nats auth - the deployed (k8s) authorization is a config nats-server accepts, its passwords from the environment", () => {
    const dir = mkdtempSync(join(tmpdir(), "rlaif-nats-deployed-"));
    try {
      const file = join(dir, "auth.conf");
      writeFileSync(file, deployedAuthorizationConfig());
      const check = (env: NodeJS.ProcessEnv) => {
        const clean = Object.fromEntries(
          Object.entries(process.env).filter(([k]) => !/^NATS_\w+_PASSWORD$/.test(k)),
        );
        return spawnSync("nats-server", ["-t", "-c", file], { env: { ...clean, ...env }, encoding: "utf8" });
      };
      const passwords = Object.fromEntries(NATS_ROLES.map((role) => [passwordEnvOf(role), `pw-${role}`]));
      const ok = check(passwords);
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stderr + ok.stdout).toMatch(/configuration file .* is valid/);
      // No password in the file: without the Secret's variables the server does not start.
      const missing = check({});
      expect(missing.status).not.toBe(0);
      expect(missing.stderr).toMatch(/variable reference for 'NATS_OPTIMIZER_PASSWORD'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
