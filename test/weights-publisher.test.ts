/**
 * The Optimizer's weights publisher against a hostile pointer and over time: an attacker's
 * pointer (an absurd 2^53 + 10, an unsigned manifest, bytes that are no manifest) never blocks
 * the next real publish and the replicas serve it; a restarted publisher continues its own log;
 * old blobs are collected after the retention count with the run's reference kept, on the
 * memory bus and on a real nats-server.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type WeightsManifest,
  WeightsManifestSchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../services/core/src/bus/bus.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { type NatsServerHandle, startNatsServer } from "../services/core/src/bus/nats-server.js";
import { LATEST_WEIGHTS_KEY, weightsObjectName } from "../services/core/src/bus/subjects.js";
import { ValidationError } from "../services/core/src/errors.js";
import { encodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import {
  fetchWeightsBlob,
  readLatestWeights,
  WeightsPublisher,
} from "../services/core/src/weights/weights-channel.js";
import { signerOf, type WeightsSigner } from "../services/core/src/weights/weights-signing.js";
import { contentIdOf, digestBlob } from "../services/core/src/weights/weights-stream.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";
import { FakeModel, fakeLoader, nameOf, poll } from "./helpers/fake-model.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const newSigner = (): WeightsSigner => signerOf(generateKeyPairSync("ed25519").privateKey);
const text = (s: string) => new TextEncoder().encode(s);
const input = (
  blob: string,
  step: number,
  reference?: { objectName: string; sha256: string; version: number },
) => ({
  blob: text(blob),
  runId: "r",
  step,
  modelKind: "fake",
  ...(reference ? { reference } : {}),
});

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function followingReplica(bus: Bus, signer: WeightsSigner, logs: string[]): Promise<PolicyReplica> {
  const replica = new PolicyReplica(new FakeModel("checkpoint"), fakeLoader(), (l) => logs.push(l), {
    verifier: signer,
  });
  closers.push(() => replica.close());
  await replica.follow(bus);
  return replica;
}

/** A memory bus, a signing publisher that logs into `logs`, and a replica verifying its key. */
async function signedSetup() {
  const bus = new MemoryBus();
  closers.push(() => bus.close());
  const signer = newSigner();
  const logs: string[] = [];
  const publisher = new WeightsPublisher({ signer, log: (l) => logs.push(l) });
  const replica = await followingReplica(bus, signer, logs);
  return { bus, logs, publisher, replica };
}

describe("weights publisher - a bad pointer never blocks the Optimizer", () => {
  it("weights publisher - after an attacker sets the pointer to 2^53+10, the next publish succeeds and replicas serve it", async () => {
    const { bus, logs, publisher, replica } = await signedSetup();
    await publisher.publish(bus, input("w1", 0));
    await publisher.publish(bus, input("w2", 1));
    await poll("v2", () => replica.serving.version === 2);

    const kv = await bus.kv();
    const absurd = create(WeightsManifestSchema, { version: 2n ** 53n + 10n, runId: "evil" });
    await kv.put(LATEST_WEIGHTS_KEY, toBinary(WeightsManifestSchema, absurd));
    await poll("the refusal", () => replica.lastSwapError.includes("9007199254741002"));

    const m3 = await publisher.publish(bus, input("w3", 2));
    expect(m3.version).toBe(3n);
    expect(m3.parentVersion).toBe(2n);
    expect(
      logs.some((l) => l.includes("held the absurd version 9007199254741002; replacing it with v3")),
    ).toBe(true);
    await poll("v3", () => replica.serving.version === 3);
    expect(nameOf(replica.serving.model)).toBe("w3");
    expect((await readLatestWeights(bus))?.manifest.version).toBe(3n);
  });

  it("weights publisher - an unsigned or garbage pointer is overwritten with the Optimizer's own next version", async () => {
    const { bus, logs, publisher, replica } = await signedSetup();
    await publisher.publish(bus, input("w1", 0));
    await poll("v1", () => replica.serving.version === 1);

    // The attacker's own blob with its own SHA-256 under a plausible, newer number.
    const objects = await bus.objects();
    const name = weightsObjectName(50, "0".repeat(64));
    const info = await objects.put(name, text("evil"));
    const evil = create(WeightsManifestSchema, {
      version: 50n,
      runId: "evil",
      objectName: name,
      sha256: info.sha256,
    });
    const kv = await bus.kv();
    await kv.put(LATEST_WEIGHTS_KEY, toBinary(WeightsManifestSchema, evil));
    await poll("the refusal", () => replica.lastSwapError.includes("unsigned"));
    expect(nameOf(replica.serving.model)).toBe("w1");

    const m2 = await publisher.publish(bus, input("w2", 1));
    expect(m2.version).toBe(2n);
    expect(
      logs.some((l) => l.includes('held v50 (run "evil"), but it is unsigned; replacing it with v2')),
    ).toBe(true);
    await poll("v2", () => replica.serving.version === 2);

    await kv.put(LATEST_WEIGHTS_KEY, new Uint8Array([0x0a, 0xff]));
    expect((await publisher.publish(bus, input("w3", 2))).version).toBe(3n);
    expect(logs.some((l) => l.includes("held bytes that are no manifest; replacing it with v3"))).toBe(true);
    await poll("v3", () => replica.serving.version === 3);
  });

  it("weights publisher - a restarted Optimizer (same key) continues after its own signed pointer; a foreign key's is replaced", async () => {
    const bus = new MemoryBus();
    closers.push(() => bus.close());
    const signer = newSigner();
    const before = new WeightsPublisher({ signer });
    for (let i = 0; i < 3; i++) await before.publish(bus, input(`w${i}`, i));
    const restarted = new WeightsPublisher({ signer });
    expect((await restarted.publish(bus, input("w3", 3))).version).toBe(4n);
    expect(restarted.lastVersion).toBe(4);
    // Another key's Optimizer does not number after it: it starts its own log.
    const foreign = new WeightsPublisher({ signer: newSigner() });
    expect((await foreign.publish(bus, input("x", 0))).version).toBe(1n);
  });

  it("weights publisher - a staged version is stored but unseen until its commit moves the pointer", async () => {
    const bus = new MemoryBus();
    closers.push(() => bus.close());
    const publisher = new WeightsPublisher({ signer: newSigner() });
    await publisher.publish(bus, input("v1", 1));
    const staged = await publisher.stage(bus, input("v2", 2));
    expect(staged.version).toBe(2);
    expect(Number((await readLatestWeights(bus))?.manifest.version)).toBe(1);
    const manifest = await publisher.commit(bus, staged);
    expect(Number(manifest.version)).toBe(2);
    expect(manifest.objectName).toBe(staged.objectName);
    expect(new TextDecoder().decode(await fetchWeightsBlob(bus, manifest.objectName, manifest.sha256))).toBe(
      "v2",
    );
  });

  it("weights publisher - a version taken between stage and commit renumbers the staged blob and drops its old name", async () => {
    const bus = new MemoryBus();
    closers.push(() => bus.close());
    const signer = newSigner();
    const publisher = new WeightsPublisher({ signer });
    await publisher.publish(bus, input("v1", 1));
    const staged = await publisher.stage(bus, input("mine", 2));
    // another Optimizer with the same key publishes v2 first
    await new WeightsPublisher({ signer }).publish(bus, input("theirs", 2));
    const manifest = await publisher.commit(bus, staged);
    expect(Number(manifest.version)).toBe(3);
    expect(Number(manifest.parentVersion)).toBe(2);
    expect(new TextDecoder().decode(await fetchWeightsBlob(bus, manifest.objectName, manifest.sha256))).toBe(
      "mine",
    );
    const names = (await (await bus.objects()).list()).map((o) => o.name);
    expect(names).not.toContain(staged.objectName);
  });

  it("weights publisher - a retention below 1 is refused naming the setting", () => {
    expect(() => new WeightsPublisher({ retention: 0 })).toThrow(ValidationError);
    expect(() => new WeightsPublisher({ retention: 0 })).toThrow(
      /weightsRetention: 0 must be a whole number >= 1/,
    );
  });
});

/** Publish a reference and `n` more versions with retention 2; the blobs left, by name. */
async function retentionRun(bus: Bus, n: number) {
  const publisher = new WeightsPublisher({ signer: newSigner(), retention: 2 });
  const first = await publisher.publish(bus, input("ref", 0));
  const reference = { objectName: first.objectName, sha256: first.sha256, version: Number(first.version) };
  const later: WeightsManifest[] = [];
  for (let i = 1; i <= n; i++) later.push(await publisher.publish(bus, input(`w${i}`, i, reference)));
  // `publish` returns once the pointer moved; the collection runs after it.
  await publisher.settled();
  const objects = await bus.objects();
  const names = (await objects.list()).map((o) => o.name).filter((x) => x.startsWith("weights/"));
  return { first, later, names: names.sort() };
}

describe("weights publisher - retention", () => {
  it("weights publisher - publish returns once the pointer moved; settled() waits for the collection, the next publish too", async () => {
    const bus = new MemoryBus();
    closers.push(() => bus.close());
    const publisher = new WeightsPublisher({ signer: newSigner(), retention: 1 });
    const first = await publisher.publish(bus, input("ref", 0));
    const reference = { objectName: first.objectName, sha256: first.sha256, version: 1 };
    const v2 = await publisher.publish(bus, input("w2", 1, reference));
    const objects = await bus.objects();
    // Hold every delete until released: the collection after v3 cannot finish.
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const remove = objects.delete.bind(objects);
    objects.delete = async (name: string) => {
      await gate;
      return remove(name);
    };
    const v3 = await publisher.publish(bus, input("w3", 2, reference));
    expect((await readLatestWeights(bus))?.manifest.version).toBe(3n);
    expect(await objects.info(v2.objectName)).not.toBeNull(); // not collected yet
    let next = false;
    const v4 = publisher.publish(bus, input("w4", 3, reference)).then((m) => {
      next = true;
      return m;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(next).toBe(false); // the next publish waits for the clean-up before it stages
    release();
    await publisher.settled();
    expect(await objects.info(v2.objectName)).toBeNull();
    expect((await v4).version).toBe(4n);
    await publisher.settled();
    expect(await objects.info(v3.objectName)).toBeNull();
    expect(await objects.info(first.objectName)).not.toBeNull(); // the reference stays
  });

  it("weights publisher - retention keeps the newest versions and the run's reference on the memory bus", async () => {
    const bus = new MemoryBus();
    closers.push(() => bus.close());
    const other = await (await bus.objects()).put("notes/readme", text("not weights"));
    const { first, later, names } = await retentionRun(bus, 5);
    expect(names).toEqual([first.objectName, later[3]?.objectName, later[4]?.objectName].sort());
    const m = later[4];
    if (!m) throw new Error("no v6");
    expect(await fetchWeightsBlob(bus, m.objectName, m.sha256, m.tensors)).toEqual(text("w5"));
    expect(await (await bus.objects()).info(other.name)).not.toBeNull();
  });

  const hasNats = requireTool(TOOLS.natsServer);
  describe.skipIf(!hasNats)("weights publisher - on nats", () => {
    let server: NatsServerHandle;
    beforeAll(async () => {
      server = await startNatsServer();
    });
    afterAll(async () => server?.stop());

    it("weights publisher - retention keeps the newest versions and the run's reference on a real nats-server", async () => {
      const bus = await NatsBus.connect(server.url, { namespace: "retention" });
      closers.push(() => bus.close());
      const { first, later, names } = await retentionRun(bus, 4);
      expect(names).toEqual([first.objectName, later[2]?.objectName, later[3]?.objectName].sort());
      const latest = await readLatestWeights(bus);
      expect(latest?.manifest.version).toBe(5n);
      expect(latest?.manifest.signature).toHaveLength(64);
    });

    it("weights publisher - on nats, the manifest's SHA-256 taken from the put is the whole blob's", async () => {
      const bus = await NatsBus.connect(server.url, { namespace: "whole-sha" });
      closers.push(() => bus.close());
      await expectWholeDigests(bus);
    });
  });

  it("weights publisher - full and delta manifests carry the whole blob's SHA-256 though it is hashed per tensor", async () => {
    await expectWholeDigests(new MemoryBus());
  });
});

/**
 * Publish a gapless safetensors blob, a delta on it and the first one again under a new number:
 * each manifest's `sha256` is the full blob's real SHA-256 (from the put for a full version,
 * hashed for a delta), its header digest is set, and object names follow the content.
 */
async function expectWholeDigests(bus: Bus): Promise<void> {
  const layers = (seed: number) =>
    new Map(
      ["a", "b", "c"].map((n, i) => [
        `${n}.weight`,
        { shape: [64], data: Float32Array.from({ length: 64 }, (_, k) => (k + 1) * (i + seed)) },
      ]),
    );
  const one = encodeSafetensors(layers(1), { format: "test" });
  const moved = layers(1);
  moved.set("b.weight", { shape: [64], data: new Float32Array(64).fill(7) });
  const two = encodeSafetensors(moved, { format: "test" });
  const publisher = new WeightsPublisher({ signer: newSigner(), fullEvery: 5 });
  const m1 = await publisher.publish(bus, { blob: one, runId: "r", step: 0, modelKind: "test" });
  const reference = { objectName: m1.objectName, sha256: m1.sha256, version: 1 };
  const m2 = await publisher.publish(bus, { blob: two, runId: "r", step: 1, modelKind: "test", reference });
  expect(m2.baseVersion).toBe(1n);
  for (const [m, blob] of [
    [m1, one],
    [m2, two],
  ] as const) {
    expect(m.sha256).toBe(createHash("sha256").update(blob).digest("hex"));
    expect(m.headerSha256).toMatch(/^[0-9a-f]{64}$/);
  }
  const id = (b: Uint8Array) => contentIdOf(digestBlob(b, "test", false));
  expect(m1.objectName).toBe(weightsObjectName(1, id(one)));
  expect(m2.objectName).toBe(weightsObjectName(2, id(two), "delta"));
  expect(id(one)).not.toBe(id(two));
}
