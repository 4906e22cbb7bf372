/**
 * NatsBus across a nats-server outage: the server (file store) is killed with SIGKILL and started
 * again on the same port and store. Operations made during the outage wait for it instead of
 * failing, the disconnect and reconnect are logged with the server's address, a KV watch carries
 * on with the changes made after the restart, and an outage longer than the retry deadline
 * fails the operation with a BusUnavailableError that names the server.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { QueueMessage } from "../services/core/src/bus/bus.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { freePort } from "../services/core/src/bus/nats-server.js";
import { BusUnavailableError } from "../services/core/src/errors.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { Restartable } from "./helpers/restartable.js";

const hasNats = requireTool(TOOLS.natsServer);
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(): Promise<{ url: string; nats: Restartable }> {
  const port = await freePort();
  const store = mkdtempSync(join(tmpdir(), "rlaif-reconnect-"));
  const nats = new Restartable(
    "nats-server",
    "nats-server",
    ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store],
    /Server is ready/,
  );
  await nats.start(15_000);
  cleanups.push(() => nats.stop());
  return { url: `nats://127.0.0.1:${port}`, nats };
}

async function until(what: string, ok: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe.skipIf(!hasNats)("nats reconnect", () => {
  it("nats reconnect - across a kill -9 and restart of nats-server, publishes, pulls, acks and a KV watch carry on", async () => {
    const { url, nats } = await server();
    const logs: string[] = [];
    const bus = await NatsBus.connect(url, {
      namespace: "rc",
      log: (l) => logs.push(l),
      reconnectWaitMs: 200,
    });
    cleanups.push(() => bus.close());
    const q = await bus.queue("jobs");
    await q.publish(enc("a"), { msgId: "a" });
    const kv = await bus.kv();
    const seen: string[] = [];
    const stop = await kv.watch("weights.latest", (e) => seen.push(dec(e.value)));
    await kv.put("weights.latest", enc("v1"));
    await until("the first change", () => seen.length === 1);

    await nats.kill9();
    await until("the disconnect to be logged", () => logs.some((l) => l.includes(`disconnected from`)));
    // Started while the server is away: it waits for the restart instead of failing.
    const publishing = q.publish(enc("b"), { msgId: "b" });
    await sleep(1_500);
    await nats.start(15_000);
    expect((await publishing).duplicate).toBe(false);
    await until("the reconnect to be logged", () => logs.some((l) => l.includes("reconnected to")));
    expect(logs.find((l) => l.includes("disconnected from"))).toContain("127.0.0.1");

    await kv.put("weights.latest", enc("v2"));
    await until("the change after the restart", () => seen.length === 2);
    const got: QueueMessage[] = [];
    while (got.length < 2) got.push(...(await q.pull("worker", { max: 2, expiresMs: 1000 })));
    expect(got.map((m) => dec(m.data)).sort()).toEqual(["a", "b"]);
    for (const m of got) await m.ack();
    expect(await q.pending()).toBe(0);
    // Each change once, in order, although the watch lived through the outage.
    expect(seen).toEqual(["v1", "v2"]);
    stop();
  }, 90_000);

  it("nats reconnect - past the retry deadline a publish fails with BusUnavailableError naming the server; settling and pulling never throw", async () => {
    const { url, nats } = await server();
    const bus = await NatsBus.connect(url, { namespace: "rd", retryMs: 300, log: () => {} });
    cleanups.push(() => bus.close());
    const q = await bus.queue("jobs");
    await q.publish(enc("held"), { msgId: "held" });
    const [held] = (await q.pull("worker", { max: 1, expiresMs: 1000 })) as [QueueMessage];
    await nats.kill9();
    // Settling a message while the server is away never throws: the ack wait decides instead.
    await expect(held.nak()).resolves.toBeUndefined();
    await expect(held.inProgress()).resolves.toBeUndefined();
    await expect(held.ack()).resolves.toBeUndefined();
    const err = await q.publish(enc("x"), { msgId: "x" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusUnavailableError);
    expect((err as Error).message).toContain(url);
    expect((err as Error).message).toContain("publish x");
    // A pull during the outage returns nothing instead of throwing.
    expect(await q.pull("worker", { max: 1, expiresMs: 1000 })).toEqual([]);
  }, 60_000);
});
