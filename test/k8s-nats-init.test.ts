/**
 * The NATS init Job of k8s/base/nats-init.yaml against a real `nats-server` with the deployed
 * users (one per service, nats-auth.ts): its two steps run as the Job runs them (streams and
 * buckets as the `optimizer` user, then the Rollout's durable consumer as the `rollout` user),
 * and then again through the real `rlaif nats-init` command. The second run must change nothing
 * (every stream's and the consumer's config, creation time and messages are as before) and end
 * without an error. The server's monitoring endpoint is read the way KEDA's nats-jetstream scaler
 * reads it (/jsz), so the test also shows the premise of scale to zero: with no Rollout running,
 * queued jobs show as the `rollout` consumer's lag.
 *
 * A second suite starts a 3-server JetStream cluster (as in the gpu-pool overlay, on loopback
 * ports): a service that came up first created its streams with one replica; the Job's
 * `--replicas 3` moves every stream and bucket to three, and a second run changes nothing.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsRole, natsClientAuth, serviceUsers } from "../services/core/src/bus/nats-auth.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { initNats, type NatsInitPart } from "../services/core/src/bus/nats-init.js";
import { freePort, type NatsServerHandle, startNatsServer } from "../services/core/src/bus/nats-server.js";
import { ROLLOUT_CONSUMER, subjectsFor } from "../services/core/src/bus/subjects.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";

const hasNats = requireTool(TOOLS.natsServer);

/** What /jsz says about one stream (and its consumers), minus what moves by itself (timestamps of "now"). */
interface StreamView {
  name: string;
  created: string;
  config: Record<string, unknown>;
  state: { messages: number; last_seq: number; consumer_count: number };
  consumers: { name: string; created: string; config: Record<string, unknown>; num_pending: number }[];
}

describe.skipIf(!hasNats)("k8s nats-init", () => {
  const users = serviceUsers();
  const names = subjectsFor();
  let server: NatsServerHandle;
  let monitorPort: number;

  beforeAll(async () => {
    monitorPort = await freePort();
    server = await startNatsServer({ users: Object.values(users), monitorPort });
  }, 30_000);
  afterAll(async () => {
    await server?.stop();
  });

  /** The environment the Job's container gets for `role` (user from the manifest, password from the Secret). */
  const envOf = (role: NatsRole) => ({
    RLAIF_NATS_USER: users[role].user,
    RLAIF_NATS_PASSWORD: users[role].password,
  });
  const authOf = (role: NatsRole) =>
    natsClientAuth({ natsUser: "", natsPassword: "", natsCreds: "" }, envOf(role));

  /** Every stream of the global account as KEDA's scaler fetches it. */
  async function jsz(): Promise<StreamView[]> {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/jsz?acc=%24G&consumers=true&config=true`);
    const body = (await res.json()) as {
      account_details?: {
        name: string;
        stream_detail?: {
          name: string;
          created: string;
          config: Record<string, unknown>;
          state: { messages: number; last_seq: number; consumer_count: number };
          consumer_detail?: {
            name: string;
            created: string;
            config: Record<string, unknown>;
            num_pending: number;
          }[];
        }[];
      }[];
    };
    const account = (body.account_details ?? []).find((a) => a.name === "$G");
    return (account?.stream_detail ?? [])
      .map((s) => ({
        name: s.name,
        created: s.created,
        config: s.config,
        state: {
          messages: s.state.messages,
          last_seq: s.state.last_seq,
          consumer_count: s.state.consumer_count,
        },
        consumers: (s.consumer_detail ?? [])
          .map((c) => ({ name: c.name, created: c.created, config: c.config, num_pending: c.num_pending }))
          .sort((a, b) => a.name.localeCompare(b.name)),
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The Job's two containers, in order, as library calls. */
  async function runJob(): Promise<void> {
    const steps: [NatsInitPart, NatsRole][] = [
      ["streams", "optimizer"],
      ["consumer", "rollout"],
    ];
    for (const [part, role] of steps) {
      await initNats({
        url: server.url,
        part,
        auth: authOf(role),
        replicas: part === "streams" ? 1 : undefined,
      });
    }
  }

  const allStreams = [
    names.queues.jobs.stream,
    names.queues.trajectories.stream,
    names.queues.deadLetters.stream,
    `KV_${names.kvBucket}`,
    `OBJ_${names.objectBucket}`,
  ].sort();

  it("nats-init - creates every stream, both buckets and the rollout consumer, and queued jobs show as its lag", async () => {
    expect(await jsz()).toEqual([]);
    await runJob();
    const views = await jsz();
    expect(views.map((v) => v.name)).toEqual(allStreams);
    for (const v of views) {
      expect(v.config.storage, v.name).toBe("file");
      expect(v.config.num_replicas, v.name).toBe(1);
    }
    const jobs = views.find((v) => v.name === names.queues.jobs.stream) as StreamView;
    expect(jobs.config.retention).toBe("workqueue");
    expect(jobs.consumers.map((c) => c.name)).toEqual([ROLLOUT_CONSUMER]);
    expect(jobs.consumers[0]?.config.ack_policy).toBe("explicit");

    // The Optimizer queues jobs while no Rollout runs: KEDA's scaler sees them as lag.
    const bus = await NatsBus.connect(server.url, { name: "optimizer", auth: authOf("optimizer") });
    try {
      const q = await bus.queue("jobs");
      for (let i = 0; i < 3; i++)
        await q.publish(new TextEncoder().encode(`job ${i}`), { msgId: `job-${i}` });
    } finally {
      await bus.close();
    }
    const after = (await jsz()).find((v) => v.name === names.queues.jobs.stream) as StreamView;
    expect(after.consumers[0]?.num_pending).toBe(3);
  }, 60_000);

  it("nats-init - a second run (library, then the rlaif command as the Job runs it) changes nothing and succeeds", async () => {
    const before = await jsz();
    expect(before.map((v) => v.name)).toEqual(allStreams);
    await runJob();
    expect(await jsz()).toEqual(before);

    const streams = await startRlaif(
      ["nats-init", "--nats", server.url, "--part", "streams", "--replicas", "1"],
      envOf("optimizer"),
    ).done;
    expect(streams.stderr).toBe("");
    expect(streams.code).toBe(0);
    for (const s of allStreams) expect(streams.stdout).toContain(`stream ${s} (R1) ready`);
    const consumer = await startRlaif(
      ["nats-init", "--nats", server.url, "--part", "consumer"],
      envOf("rollout"),
    ).done;
    expect(consumer.stderr).toBe("");
    expect(consumer.code).toBe(0);
    expect(consumer.stdout).toContain(`consumer ${names.queues.jobs.stream}/${ROLLOUT_CONSUMER} ready`);
    // Same configs, same creation times, the three queued jobs still there and still pending.
    expect(await jsz()).toEqual(before);
    // Two `rlaif` starts (tsx transpiles the CLI): minutes on a loaded 2-core machine.
  }, 300_000);

  it("nats-init - replicas are refused for the consumer part, and bad flags exit 2 saying what to fix", async () => {
    // Replicas belong to the streams part: the Rollout's user may not update streams.
    await expect(
      initNats({ url: server.url, part: "consumer", auth: authOf("rollout"), replicas: 3 }),
    ).rejects.toThrow(/replicas/);
    const bad = await startRlaif(["nats-init", "--nats", server.url, "--replicas", "7"], envOf("optimizer"))
      .done;
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--replicas 7: must be a whole number from 1 to 5/);
  }, 180_000);
});

/** Three nats-servers with JetStream routed into one cluster on loopback, and how to stop them. */
async function startCluster(): Promise<{ urls: string[]; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "rlaif-nats-cluster-"));
  const ports = await Promise.all(
    [0, 1, 2].map(async () => ({ client: await freePort(), route: await freePort() })),
  );
  const routes = ports.map((p) => `nats://127.0.0.1:${p.route}`).join(",");
  // Named like the StatefulSet's pods; each routes to all three (itself included, as in cluster.conf).
  const servers: ChildProcess[] = ports.map((p, i) =>
    spawn(
      "nats-server",
      [
        ...["-a", "127.0.0.1", "-p", String(p.client), "-js", "-sd", join(dir, `s${i}`), "-n", `nats-${i}`],
        ...["--cluster_name", "rlaif", "--cluster", `nats://127.0.0.1:${p.route}`, "--routes", routes],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    ),
  );
  // A test runner that dies without stop() must not leave the servers running.
  process.once("exit", () => {
    for (const c of servers) c.kill("SIGKILL");
  });
  await Promise.all(
    servers.map(
      (c) =>
        new Promise<void>((resolve, reject) => {
          let out = "";
          const timer = setTimeout(() => reject(new Error(`nats-server did not start: ${out}`)), 20_000);
          const seen = (d: Buffer) => {
            out += d.toString();
            if (out.includes("Server is ready")) {
              clearTimeout(timer);
              resolve();
            }
          };
          c.stdout?.on("data", seen);
          c.stderr?.on("data", seen);
        }),
    ),
  );
  const urls = ports.map((p) => `nats://127.0.0.1:${p.client}`);
  // "Server is ready" comes before the three have elected a JetStream meta leader: until then
  // every JetStream request times out. Wait until each server answers one (on a loaded machine
  // the election takes seconds).
  for (const url of urls) {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const nc = await connect({ servers: url });
      try {
        await (await jetstreamManager(nc, { timeout: 2000 })).getAccountInfo();
        break;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`the cluster's JetStream did not come up at ${url}`, { cause: err });
        await new Promise((r) => setTimeout(r, 250));
      } finally {
        await nc.close();
      }
    }
  }
  return {
    urls,
    async stop() {
      for (const c of servers) c.kill("SIGTERM");
      await Promise.all(servers.map((c) => (c.exitCode === null ? once(c, "exit") : undefined)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe.skipIf(!hasNats)("k8s nats-init on a 3-server cluster", () => {
  let cluster: Awaited<ReturnType<typeof startCluster>>;
  const names = subjectsFor();
  const streams = [
    names.queues.jobs.stream,
    names.queues.trajectories.stream,
    names.queues.deadLetters.stream,
    `KV_${names.kvBucket}`,
    `OBJ_${names.objectBucket}`,
  ];
  beforeAll(async () => {
    cluster = await startCluster();
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  /** Replica count, peers and creation time of every stream, and the consumer's peers. */
  async function layout(): Promise<Record<string, { replicas: number; peers: number; created: string }>> {
    const nc = await connect({ servers: cluster.urls[2] });
    try {
      const jsm = await jetstreamManager(nc);
      const out: Record<string, { replicas: number; peers: number; created: string }> = {};
      for (const s of streams) {
        const info = await jsm.streams.info(s).catch(() => null);
        if (info)
          out[s] = {
            replicas: info.config.num_replicas,
            peers: info.cluster?.replicas?.length ?? 0,
            created: info.created,
          };
      }
      const c = await jsm.consumers.info(names.queues.jobs.stream, ROLLOUT_CONSUMER).catch(() => null);
      if (c)
        out.consumer = {
          replicas: c.config.num_replicas ?? 0,
          peers: c.cluster?.replicas?.length ?? 0,
          created: c.created,
        };
      return out;
    } finally {
      await nc.close();
    }
  }

  it("nats-init - --replicas 3 moves the streams a service created with one replica to three; a rerun changes nothing", async () => {
    // A Rollout that came up before the Job: its streams and the KV bucket are R1.
    const svc = await NatsBus.connect(cluster.urls[0] as string, { name: "rollout" });
    try {
      await svc.queue("jobs");
      await svc.kv();
    } finally {
      await svc.close();
    }
    const early = await layout();
    expect(early[names.queues.jobs.stream]?.replicas).toBe(1);
    expect(early[`KV_${names.kvBucket}`]?.replicas).toBe(1);

    await initNats({ url: cluster.urls[1] as string, part: "all", replicas: 3 });
    const after = await layout();
    for (const s of streams) {
      // Three copies: the stream's leader and two peers.
      expect(after[s]?.replicas, s).toBe(3);
      expect(after[s]?.peers, s).toBe(2);
    }
    // Moved, not recreated: the stream the service made is the same one.
    expect(after[names.queues.jobs.stream]?.created).toBe(early[names.queues.jobs.stream]?.created);
    // The consumer follows its stream (replicas 0: the stream's count) onto all three servers.
    expect(after.consumer?.peers).toBe(2);

    await initNats({ url: cluster.urls[2] as string, part: "all", replicas: 3 });
    expect(await layout()).toEqual(after);
  }, 120_000);
});
