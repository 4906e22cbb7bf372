/**
 * The thread bridge of the bus (port-bus.ts) over a MessageChannel: KV reads and watches and
 * Object Store reads behave as on the bus itself, blobs are moved (transferred) rather than
 * copied and can come with the watched entry that names them, errors keep their classes, writes
 * are refused, and stopping or closing ends it all.
 */
import { MessageChannel } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import type { KvEntry } from "../services/core/src/bus/bus.js";
import { MemoryBus, type MemoryObjectStore } from "../services/core/src/bus/memory-bus.js";
import { PortBus, serveBusOverPort } from "../services/core/src/bus/port-bus.js";
import { ObjectIntegrityError, ObjectNotFoundError, RlaifError } from "../services/core/src/errors.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function bridge() {
  const bus = new MemoryBus();
  const { port1, port2 } = new MessageChannel();
  const stop = serveBusOverPort(bus, port1);
  const remote = new PortBus(port2);
  cleanups.push(
    () => bus.close(),
    stop,
    () => remote.close(),
    () => port1.close(),
  );
  return { bus, remote, stop };
}

async function until(cond: () => boolean): Promise<void> {
  await expect.poll(cond, { timeout: 5_000 }).toBe(true);
}

describe("port bus", () => {
  it("port bus - kv get and watch cross: the current value, then changes in order, until unwatched", async () => {
    const { bus, remote } = bridge();
    const kv = await bus.kv();
    await kv.put("weights.latest", enc("v1"));
    const entry = await (await remote.kv()).get("weights.latest");
    expect(entry && dec(entry.value)).toBe("v1");
    expect(await (await remote.kv()).get("absent")).toBeNull();
    const seen: KvEntry[] = [];
    const unwatch = await (await remote.kv()).watch("weights.latest", (e) => seen.push(e));
    await until(() => seen.length === 1);
    await kv.put("weights.latest", enc("v2"));
    await kv.put("weights.latest", enc("v3"));
    await until(() => seen.length === 3);
    expect(seen.map((e) => dec(e.value))).toEqual(["v1", "v2", "v3"]);
    expect(seen.map((e) => e.revision)).toEqual([1, 2, 3]);
    unwatch();
    await kv.put("weights.latest", enc("v4"));
    // A marker written after v4 comes through on a second watch: by then v4 was not delivered.
    const marker: KvEntry[] = [];
    await (await remote.kv()).watch("marker", (e) => marker.push(e));
    await kv.put("marker", enc("m"));
    await until(() => marker.length === 1);
    expect(seen).toHaveLength(3);
  });

  it("port bus - objects cross as moved buffers and keep their error classes", async () => {
    const { bus, remote } = bridge();
    const store = (await bus.objects()) as MemoryObjectStore;
    const blob = new Uint8Array(3 << 20).map((_, i) => i % 251);
    const info = await store.put("w1", blob);
    // What the bus hands the bridge is moved to the other side: detached here, not copied.
    let handed: Uint8Array | undefined;
    const get = store.get.bind(store);
    store.get = async (name) => {
      handed = await get(name);
      return handed;
    };
    const got = await (await remote.objects()).get("w1");
    expect(Buffer.from(got).equals(Buffer.from(blob))).toBe(true);
    expect(handed?.byteLength).toBe(0);
    expect(await (await remote.objects()).info("w1")).toEqual(info);
    await expect((await remote.objects()).get("nope")).rejects.toBeInstanceOf(ObjectNotFoundError);
    store.corruptForTest("w1");
    await expect((await remote.objects()).get("w1")).rejects.toBeInstanceOf(ObjectIntegrityError);
  });

  it("port bus - a watched entry brings the objects it names, so reading them needs no round trip", async () => {
    const bus = new MemoryBus();
    const { port1, port2 } = new MessageChannel();
    const stop = serveBusOverPort(bus, port1, { sendWithEntry: (_key, value) => dec(value).split(",") });
    const remote = new PortBus(port2);
    cleanups.push(
      () => bus.close(),
      stop,
      () => remote.close(),
      () => port1.close(),
    );
    const store = await bus.objects();
    for (const name of ["A", "B", "R"]) await store.put(name, enc(`blob ${name}`));
    const seen: string[] = [];
    await (await remote.kv()).watch("ptr", (e) => seen.push(dec(e.value)));
    const kv = await bus.kv();
    await kv.put("ptr", enc("A,R"));
    await until(() => seen.length === 1);
    expect(dec(await (await remote.objects()).get("A"))).toBe("blob A");
    // R was sent with the first entry and is named again: it is kept, not sent twice.
    await kv.put("ptr", enc("B,R"));
    await until(() => seen.length === 2);
    // The serving side stops answering: what came with the entries is still readable.
    stop();
    expect(dec(await (await remote.objects()).get("B"))).toBe("blob B");
    expect(dec(await (await remote.objects()).get("R"))).toBe("blob R");
  });

  it("port bus - writes and queues are refused, naming what is not bridged", async () => {
    const { remote } = bridge();
    await expect(remote.queue("jobs")).rejects.toThrow(
      /queue "jobs" is not available across the thread bridge/,
    );
    await expect((await remote.kv()).put("k", enc("v"))).rejects.toThrow(/kv put is not available/);
    await expect((await remote.objects()).put("o", enc("v"))).rejects.toThrow(/objects put is not available/);
  });

  it("port bus - close fails the calls still waiting; stop ends the server's watches", async () => {
    const { port1, port2 } = new MessageChannel();
    cleanups.push(() => port1.close());
    // Nobody serves port1: the call waits until the bus is closed.
    const lonely = new PortBus(port2);
    const waiting = (await lonely.kv()).get("k");
    await lonely.close();
    await expect(waiting).rejects.toThrow(RlaifError);
    await expect((await lonely.kv()).get("k")).rejects.toThrow(/bus is closed/);

    const { bus, remote, stop } = bridge();
    const seen: KvEntry[] = [];
    await (await remote.kv()).watch("k", (e) => seen.push(e));
    stop();
    await (await bus.kv()).put("k", enc("after stop"));
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual([]);
  });
});
