/**
 * The bus contract: one suite, run against `MemoryBus` and against `NatsBus` on a real
 * `nats-server` started here on a free port. Both must pass it, so services behave the same
 * embedded and distributed.
 */

import { createHash, randomBytes } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Bus, KvEntry, QueueMessage } from "../services/core/src/bus/bus.js";
import { MemoryBus, type MemoryObjectStore } from "../services/core/src/bus/memory-bus.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { type NatsServerHandle, startNatsServer } from "../services/core/src/bus/nats-server.js";
import { subjectsFor } from "../services/core/src/bus/subjects.js";
import {
  KvConflictError,
  ObjectIntegrityError,
  ObjectNotFoundError,
  RlaifError,
} from "../services/core/src/errors.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

/** One bus under test, plus what some tests need beyond the contract. */
interface Fixture {
  bus: Bus;
  /** A second handle on the same bus, as another process would have (same bus when in-process). */
  peer(): Promise<Bus>;
  /** Corrupt a stored object behind the store's back. */
  tamper(name: string): Promise<void>;
  close(): Promise<void>;
}

interface Target {
  label: string;
  ackWaitMs: number;
  open(): Promise<Fixture>;
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function waitFor(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

function busContract(target: Target): void {
  const name = (what: string) => `bus(${target.label}) - ${what}`;
  let fx: Fixture | undefined;
  const open = async () => {
    fx = await target.open();
    return fx;
  };
  afterEach(async () => {
    await fx?.close();
    fx = undefined;
  });

  it(name("publish, pull and ack deliver each message once"), async () => {
    const q = await (await open()).bus.queue("jobs");
    for (const i of [1, 2, 3])
      expect((await q.publish(enc(`m${i}`), { msgId: `id-${i}` })).duplicate).toBe(false);
    const msgs = await q.pull("rollout", { max: 10, expiresMs: 1_000 });
    expect(msgs.map((m) => [dec(m.data), m.msgId, m.deliveryCount])).toEqual([
      ["m1", "id-1", 1],
      ["m2", "id-2", 1],
      ["m3", "id-3", 1],
    ]);
    expect(await q.pending()).toBe(3);
    for (const m of msgs) await m.ack();
    expect(await q.pending()).toBe(0);
  });

  it(name("dedup drops a second publish with the same msgId"), async () => {
    const q = await (await open()).bus.queue("jobs");
    const first = await q.publish(enc("a"), { msgId: "run/0/7" });
    const second = await q.publish(enc("b"), { msgId: "run/0/7" });
    expect(second).toEqual({ seq: first.seq, duplicate: true });
    expect(await q.pending()).toBe(1);
    const msgs = await q.pull("rollout", { max: 10, expiresMs: 1_000 });
    expect(msgs.map((m) => dec(m.data))).toEqual(["a"]);
  });

  it(name("two consumers in the same group never both get a message"), async () => {
    const f = await open();
    const [qa, qb] = [await f.bus.queue("jobs"), await (await f.peer()).queue("jobs")];
    const ids = Array.from({ length: 12 }, (_, i) => `job-${i}`);
    for (const id of ids) await qa.publish(enc(id), { msgId: id });
    const seen: string[] = [];
    const worker = async (q: typeof qa) => {
      while (seen.length < ids.length) {
        for (const m of await q.pull("rollout", { max: 3, expiresMs: 1_000 })) {
          seen.push(m.msgId);
          await m.ack();
        }
      }
    };
    await Promise.all([worker(qa), worker(qb)]);
    expect([...seen].sort()).toEqual([...ids].sort());
    expect(await qa.pending()).toBe(0);
  });

  it(name("a second consumer group on a work queue is rejected"), async () => {
    const q = await (await open()).bus.queue("trajectories");
    await q.publish(enc("t"), { msgId: "t1" });
    expect(await q.pull("optimizer", { max: 1, expiresMs: 1_000 })).toHaveLength(1);
    await expect(q.pull("other", { max: 1, expiresMs: 1_000 })).rejects.toBeInstanceOf(RlaifError);
  });

  it(name("nak redelivers with deliveryCount 2"), async () => {
    const q = await (await open()).bus.queue("jobs");
    await q.publish(enc("x"), { msgId: "n1" });
    const [first] = await q.pull("rollout", { max: 1, expiresMs: 1_000 });
    await (first as QueueMessage).nak();
    const [again] = (await q.pull("rollout", { max: 1, expiresMs: 2_000 })) as [QueueMessage];
    expect([again.msgId, again.deliveryCount, dec(again.data)]).toEqual(["n1", 2, "x"]);
    await again.ack();
    expect(await q.pending()).toBe(0);
  });

  it(name("a message not acked within the ack wait is redelivered"), async () => {
    const q = await (await open()).bus.queue("jobs");
    await q.publish(enc("slow"), { msgId: "w1" });
    const [first] = await q.pull("rollout", { max: 1, expiresMs: 1_000 });
    expect(first?.deliveryCount).toBe(1);
    const started = Date.now();
    const [again] = await q.pull("rollout", { max: 1, expiresMs: target.ackWaitMs * 4 });
    expect([again?.msgId, again?.deliveryCount]).toEqual(["w1", 2]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(target.ackWaitMs * 0.5);
    await again?.ack();
  });

  it(name("inProgress keeps a message held past its ack wait"), async () => {
    const q = await (await open()).bus.queue("jobs");
    await q.publish(enc("held"), { msgId: "p1" });
    const [first] = (await q.pull("rollout", { max: 1, expiresMs: 1_000 })) as [QueueMessage];
    // Signalled every quarter ack wait, it is not redelivered within two ack waits.
    const timer = setInterval(() => void first.inProgress(), target.ackWaitMs / 4);
    try {
      expect(await q.pull("rollout", { max: 1, expiresMs: target.ackWaitMs * 2 })).toEqual([]);
    } finally {
      clearInterval(timer);
    }
    await first.ack();
    expect(await q.pending()).toBe(0);
  });

  it(name("pending counts stored messages and purge drops them"), async () => {
    const q = await (await open()).bus.queue("trajectories");
    for (const i of [1, 2, 3]) await q.publish(enc(`t${i}`), { msgId: `p${i}` });
    expect(await q.pending()).toBe(3);
    await q.purge();
    expect(await q.pending()).toBe(0);
    await q.publish(enc("fresh"), { msgId: "p4" });
    const msgs = await q.pull("optimizer", { max: 10, expiresMs: 1_000 });
    expect(msgs.map((m) => dec(m.data))).toEqual(["fresh"]);
  });

  it(name("headers round-trip"), async () => {
    const q = await (await open()).bus.queue("trajectories");
    const headers = { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-run": "r1" };
    await q.publish(enc("h"), { msgId: "h1", headers });
    const [m] = await q.pull("optimizer", { max: 1, expiresMs: 1_000 });
    expect(m?.headers).toEqual(headers);
  });

  it(name("objects round-trip a 3 MB blob with its SHA-256"), async () => {
    const store = await (await open()).bus.objects();
    const blob = new Uint8Array(randomBytes(3 * 1024 * 1024 + 17));
    const sha256 = createHash("sha256").update(blob).digest("hex");
    expect(await store.put("weights/v1", blob)).toEqual({ name: "weights/v1", size: blob.length, sha256 });
    expect(await store.info("weights/v1")).toEqual({ name: "weights/v1", size: blob.length, sha256 });
    expect(Buffer.from(await store.get("weights/v1")).equals(Buffer.from(blob))).toBe(true);
  });

  it(name("a tampered object fails with ObjectIntegrityError"), async () => {
    const f = await open();
    const store = await f.bus.objects();
    await store.put("weights/v2", new Uint8Array(randomBytes(300_000)));
    await f.tamper("weights/v2");
    await expect(store.get("weights/v2")).rejects.toBeInstanceOf(ObjectIntegrityError);
  });

  it(name("objects stream in and out in chunks, the same bytes and SHA-256 as a whole put"), async () => {
    const store = await (await open()).bus.objects();
    const blob = new Uint8Array(randomBytes(1024 * 1024 + 5));
    const sha256 = createHash("sha256").update(blob).digest("hex");
    const pieces = () => [blob.subarray(0, 10), blob.subarray(10, 300_000), blob.subarray(300_000)];
    expect(await store.putStream("weights/s1", pieces)).toEqual({
      name: "weights/s1",
      size: blob.length,
      sha256,
    });
    const chunks: Uint8Array[] = [];
    for await (const c of store.getStream("weights/s1")) chunks.push(c);
    expect(chunks.length).toBeGreaterThan(1);
    expect(Buffer.concat(chunks).equals(Buffer.from(blob))).toBe(true);
  });

  it(
    name(
      "a tampered object fails the streamed get with ObjectIntegrityError, a missing one with ObjectNotFoundError",
    ),
    async () => {
      const f = await open();
      const store = await f.bus.objects();
      await store.putStream("weights/s2", () => [new Uint8Array(randomBytes(300_000))]);
      await f.tamper("weights/s2");
      const drain = async (name: string) => {
        for await (const _ of store.getStream(name));
      };
      await expect(drain("weights/s2")).rejects.toBeInstanceOf(ObjectIntegrityError);
      await expect(drain("nope")).rejects.toBeInstanceOf(ObjectNotFoundError);
    },
  );

  it(name("a missing or deleted object fails with ObjectNotFoundError"), async () => {
    const store = await (await open()).bus.objects();
    await expect(store.get("nope")).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(await store.info("nope")).toBeNull();
    await store.put("gone", enc("bytes"));
    await store.delete("gone");
    await store.delete("gone");
    await expect(store.get("gone")).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(await store.info("gone")).toBeNull();
  });

  it(name("objects list names every stored object with its size and SHA-256, deleted ones not"), async () => {
    const store = await (await open()).bus.objects();
    expect(await store.list()).toEqual([]);
    await store.put("weights/a", enc("aa"));
    await store.put("weights/b", enc("bbb"));
    await store.put("gone", enc("x"));
    await store.delete("gone");
    const listed = (await store.list()).sort((x, y) => x.name.localeCompare(y.name));
    const sha = (s: string) => createHash("sha256").update(enc(s)).digest("hex");
    expect(listed).toEqual([
      { name: "weights/a", size: 2, sha256: sha("aa") },
      { name: "weights/b", size: 3, sha256: sha("bbb") },
    ]);
  });

  it(name("kv put and get return value and revision"), async () => {
    const kv = await (await open()).bus.kv();
    expect(await kv.get("weights.latest")).toBeNull();
    const rev = await kv.put("weights.latest", enc("v1"));
    const got = (await kv.get("weights.latest")) as KvEntry;
    expect([got.key, dec(got.value), got.revision]).toEqual(["weights.latest", "v1", rev]);
  });

  it(name("kv update succeeds at the current revision and conflicts on a stale one"), async () => {
    const kv = await (await open()).bus.kv();
    const r1 = await kv.put("weights.latest", enc("v1"));
    const r2 = await kv.update("weights.latest", enc("v2"), r1);
    expect(r2).toBeGreaterThan(r1);
    await expect(kv.update("weights.latest", enc("v3"), r1)).rejects.toBeInstanceOf(KvConflictError);
    expect(dec((await kv.get("weights.latest"))?.value ?? new Uint8Array())).toBe("v2");
  });

  it(name("kv update at revision 0 creates only when absent"), async () => {
    const kv = await (await open()).bus.kv();
    const r1 = await kv.update("runs.r1.state", enc("new"), 0);
    expect(r1).toBeGreaterThan(0);
    await expect(kv.update("runs.r1.state", enc("again"), 0)).rejects.toBeInstanceOf(KvConflictError);
  });

  it(name("kv watch sees the initial value, then changes in order, until unsubscribed"), async () => {
    const kv = await (await open()).bus.kv();
    await kv.put("other", enc("ignored"));
    const r1 = await kv.put("weights.latest", enc("v1"));
    const seen: KvEntry[] = [];
    const stop = await kv.watch("weights.latest", (e) => seen.push(e));
    await waitFor(() => seen.length === 1);
    const r2 = await kv.put("weights.latest", enc("v2"));
    await kv.put("other", enc("ignored"));
    const r3 = await kv.update("weights.latest", enc("v3"), r2);
    await waitFor(() => seen.length === 3);
    stop();
    await kv.put("weights.latest", enc("v4"));
    await new Promise((r) => setTimeout(r, 100));
    expect(seen.map((e) => [e.key, dec(e.value), e.revision])).toEqual([
      ["weights.latest", "v1", r1],
      ["weights.latest", "v2", r2],
      ["weights.latest", "v3", r3],
    ]);
  });
}

describe("bus(memory)", () => {
  busContract({
    label: "memory",
    ackWaitMs: 200,
    open: async () => {
      const bus = new MemoryBus({ ackWaitMs: 200 });
      return {
        bus,
        peer: async () => bus,
        tamper: async (name) => ((await bus.objects()) as MemoryObjectStore).corruptForTest(name),
        close: () => bus.close(),
      };
    },
  });

  it("bus(memory) - close releases a waiting pull and later calls fail", async () => {
    const bus = new MemoryBus();
    const q = await bus.queue("jobs");
    const waiting = q.pull("rollout", { max: 1, expiresMs: 60_000 });
    await bus.close();
    expect(await waiting).toEqual([]);
    await expect(q.publish(enc("x"), { msgId: "late" })).rejects.toBeInstanceOf(RlaifError);
  });
});

const hasNatsServer = requireTool(TOOLS.natsServer);

describe.skipIf(!hasNatsServer)("bus(nats)", () => {
  let server: NatsServerHandle;
  let seq = 0;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => server?.stop());

  busContract({
    label: "nats",
    ackWaitMs: 1_000,
    open: async () => {
      const namespace = `t${++seq}`;
      const opts = { namespace, ackWaitMs: 1_000 };
      const bus = await NatsBus.connect(server.url, opts);
      const extra: Bus[] = [];
      return {
        bus,
        peer: async () => {
          const peer = await NatsBus.connect(server.url, opts);
          extra.push(peer);
          return peer;
        },
        // Append a chunk to the object's data: the stored digest no longer matches what a reader streams.
        tamper: async (name) => {
          const nc = await connect({ servers: server.url });
          const js = jetstream(nc);
          const bucket = subjectsFor(namespace).objectBucket;
          const info = await (await new Objm(js).open(bucket)).info(name);
          await js.publish(`$O.${bucket}.C.${info?.nuid}`, enc("tampered"));
          await nc.close();
        },
        close: async () => {
          for (const b of [bus, ...extra]) await b.close();
        },
      };
    },
  });
});
