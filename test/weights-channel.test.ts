/**
 * The weights channel (Optimizer → Policy replicas) on a MemoryBus: versions from the latest
 * pointer's compare-and-set, manifests bound to their blobs by SHA-256, and a PolicyReplica that
 * swaps only to newer, intact versions and keeps serving the old one otherwise. The replica gets
 * a fake model loader (a blob's text becomes the model's name), so no tensors are involved.
 * Signatures, version bounds, a bad pointer and retention: weights-signing.test.ts.
 */
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import {
  type WeightsManifest,
  WeightsManifestSchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { MemoryBus, type MemoryObjectStore } from "../services/core/src/bus/memory-bus.js";
import { LATEST_WEIGHTS_KEY, weightsObjectName } from "../services/core/src/bus/subjects.js";
import { ObjectIntegrityError, ObjectNotFoundError, WeightsError } from "../services/core/src/errors.js";
import {
  fetchWeightsBlob,
  publishWeights,
  readLatestWeights,
  watchLatestWeights,
} from "../services/core/src/weights/weights-channel.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";
import { FakeModel, fakeLoader, nameOf, poll } from "./helpers/fake-model.js";

const text = (s: string) => new TextEncoder().encode(s);
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const loader = fakeLoader();
const loaded = loader.loaded;

const buses: MemoryBus[] = [];
const replicas: PolicyReplica[] = [];

function newBus(): MemoryBus {
  const bus = new MemoryBus();
  buses.push(bus);
  return bus;
}

function newReplica(log?: (line: string) => void): PolicyReplica {
  const r = new PolicyReplica(new FakeModel("checkpoint"), loader, log);
  replicas.push(r);
  return r;
}

afterEach(async () => {
  for (const r of replicas.splice(0)) await r.close();
  for (const b of buses.splice(0)) await b.close();
  loaded.length = 0;
});

/** Publish by hand: store `stored` as version `version`, then move the pointer to a manifest claiming `claimed`. */
async function publishByHand(
  bus: MemoryBus,
  version: number,
  stored: Uint8Array,
  opts: { corrupt?: boolean; claimedSha256?: string } = {},
): Promise<WeightsManifest> {
  const objects = (await bus.objects()) as MemoryObjectStore;
  const kv = await bus.kv();
  const objectName = weightsObjectName(version, sha256(stored));
  const info = await objects.put(objectName, stored);
  if (opts.corrupt) objects.corruptForTest(objectName);
  const latest = await readLatestWeights(bus);
  const manifest = create(WeightsManifestSchema, {
    version: BigInt(version),
    runId: "hand",
    step: version,
    objectName,
    sha256: opts.claimedSha256 ?? info.sha256,
    sizeBytes: BigInt(info.size),
    referenceObjectName: latest?.manifest.referenceObjectName ?? objectName,
    referenceSha256: latest?.manifest.referenceSha256 ?? info.sha256,
    referenceVersion: latest?.manifest.referenceVersion ?? BigInt(version),
    modelKind: "fake",
  });
  await kv.update(LATEST_WEIGHTS_KEY, toBinary(WeightsManifestSchema, manifest), latest?.revision ?? 0);
  return manifest;
}

describe("weights channel - publish and fetch", () => {
  it("weights channel - publishWeights gives versions 1, 2, 3 and moves the latest pointer each time", async () => {
    const bus = newBus();
    expect(await readLatestWeights(bus)).toBeNull();
    const m1 = await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    const reference = { objectName: m1.objectName, sha256: m1.sha256, version: Number(m1.version) };
    const m2 = await publishWeights(bus, {
      blob: text("w2"),
      runId: "r",
      step: 1,
      modelKind: "fake",
      reference,
    });
    const m3 = await publishWeights(bus, {
      blob: text("w3!"),
      runId: "r",
      step: 2,
      modelKind: "fake",
      reference,
    });
    expect([m1.version, m2.version, m3.version]).toEqual([1n, 2n, 3n]);
    expect([m1, m2, m3].map((m) => m.objectName)).toEqual(
      [m1, m2, m3].map((m) => weightsObjectName(Number(m.version), m.sha256)),
    );
    // The first publish is its own reference; later ones point back at it.
    expect(m1.referenceObjectName).toBe(m1.objectName);
    expect(m1.referenceVersion).toBe(1n);
    for (const m of [m2, m3]) {
      expect(m.referenceObjectName).toBe(m1.objectName);
      expect(m.referenceSha256).toBe(m1.sha256);
      expect(m.referenceVersion).toBe(1n);
    }
    expect(m3.step).toBe(2);
    expect(m3.sizeBytes).toBe(3n);
    expect(m3.runId).toBe("r");
    expect(m3.modelKind).toBe("fake");
    const latest = await readLatestWeights(bus);
    expect(latest?.manifest.version).toBe(3n);
    expect(latest?.manifest.sha256).toBe(m3.sha256);
  });

  it("weights channel - a watcher sees the current manifest and each later one in order", async () => {
    const bus = newBus();
    await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    const seen: bigint[] = [];
    const stop = await watchLatestWeights(bus, (m) => seen.push(m.version));
    await publishWeights(bus, { blob: text("w2"), runId: "r", step: 1, modelKind: "fake" });
    await publishWeights(bus, { blob: text("w3"), runId: "r", step: 2, modelKind: "fake" });
    await poll("three manifests", () => seen.length === 3);
    expect(seen).toEqual([1n, 2n, 3n]);
    stop();
  });

  it("weights channel - concurrent publishers on one bus both succeed with distinct versions", async () => {
    const bus = newBus();
    const [a, b] = await Promise.all([
      publishWeights(bus, { blob: text("from-a"), runId: "a", step: 1, modelKind: "fake" }),
      publishWeights(bus, { blob: text("from-b"), runId: "b", step: 1, modelKind: "fake" }),
    ]);
    expect(new Set([a.version, b.version])).toEqual(new Set([1n, 2n]));
    const latest = await readLatestWeights(bus);
    expect(latest?.manifest.version).toBe(2n);
    // The pointer names an intact blob: the one its manifest promised.
    const winner = latest?.manifest as WeightsManifest;
    const blob = await fetchWeightsBlob(bus, winner.objectName, winner.sha256);
    expect(sha256(blob)).toBe(winner.sha256);
  });

  it("weights channel - racing publishers never overwrite each other's blob: every version stays fetchable", async () => {
    const bus = newBus();
    const blobs = ["a", "b", "c", "d"].map((x) => text(`w-${x}`));
    const ms = await Promise.all(
      blobs.map((blob) => publishWeights(bus, { blob, runId: "r", step: 0, modelKind: "fake" })),
    );
    expect(new Set(ms.map((m) => m.version)).size).toBe(4);
    for (const [i, m] of ms.entries()) {
      expect(await fetchWeightsBlob(bus, m.objectName, m.sha256)).toEqual(blobs[i]);
    }
  });

  it("weights channel - many sequential publishers keep versions strictly increasing", async () => {
    const bus = newBus();
    const versions: bigint[] = [];
    for (let i = 0; i < 12; i++) {
      versions.push(
        (await publishWeights(bus, { blob: text(`w${i}`), runId: "r", step: i, modelKind: "fake" })).version,
      );
    }
    expect(versions).toEqual(versions.map((_, i) => BigInt(i + 1)));
  });

  it("weights channel - the manifest's sha256 is the SHA-256 of the blob and fetch returns the blob", async () => {
    const bus = newBus();
    const blob = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 31) & 0xff);
    const m = await publishWeights(bus, { blob, runId: "r", step: 0, modelKind: "fake" });
    expect(m.sha256).toBe(sha256(blob));
    expect(m.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(m.sizeBytes).toBe(BigInt(blob.length));
    const fetched = await fetchWeightsBlob(bus, m.objectName, m.sha256);
    expect(fetched).toEqual(blob);
    // The publisher mutating its buffer afterwards changes nothing stored.
    blob[0] = 99;
    expect(sha256(await fetchWeightsBlob(bus, m.objectName, m.sha256))).toBe(m.sha256);
  });

  it("weights channel - fetchWeightsBlob refuses a blob that does not match the manifest", async () => {
    const bus = newBus();
    const m = await publishWeights(bus, { blob: text("original"), runId: "r", step: 0, modelKind: "fake" });
    const objects = (await bus.objects()) as MemoryObjectStore;
    // Replaced under the same name (the store's own digest is fresh and matches): only the manifest catches it.
    await objects.put(m.objectName, text("replaced"));
    await expect(fetchWeightsBlob(bus, m.objectName, m.sha256)).rejects.toThrow(ObjectIntegrityError);
    await expect(fetchWeightsBlob(bus, m.objectName, m.sha256)).rejects.toThrow(
      /does not match the manifest/,
    );
    // Corrupted in place: the store's own check fires.
    const m2 = await publishWeights(bus, { blob: text("second"), runId: "r", step: 1, modelKind: "fake" });
    objects.corruptForTest(m2.objectName);
    await expect(fetchWeightsBlob(bus, m2.objectName, m2.sha256)).rejects.toThrow(ObjectIntegrityError);
    // Gone altogether.
    await expect(fetchWeightsBlob(bus, "weights/v99999999.safetensors", m.sha256)).rejects.toThrow(
      ObjectNotFoundError,
    );
  });
});

describe("weights channel - policy replica", () => {
  it("policy replica - apply swaps to a newer version and refuses an older or equal one", async () => {
    const bus = newBus();
    const replica = newReplica();
    const initial = replica.serving.model as FakeModel;
    expect(replica.serving.version).toBe(0);

    const m1 = await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    const reference = { objectName: m1.objectName, sha256: m1.sha256, version: 1 };
    const m2 = await publishWeights(bus, {
      blob: text("w2"),
      runId: "r",
      step: 1,
      modelKind: "fake",
      reference,
    });

    await replica.apply(bus, m1);
    expect(replica.serving.version).toBe(1);
    expect(nameOf(replica.serving.model)).toBe("w1");
    expect(replica.referenceModel.version).toBe(1);
    expect(nameOf(replica.referenceModel.model)).toBe("w1");
    expect(initial.disposed).toBe(true);

    await replica.apply(bus, m2);
    expect(replica.serving.version).toBe(2);
    expect(nameOf(replica.serving.model)).toBe("w2");
    // The reference stays the run's starting weights and is not reloaded.
    expect(replica.referenceModel.version).toBe(1);
    expect(nameOf(replica.referenceModel.model)).toBe("w1");
    expect((replica.referenceModel.model as FakeModel).disposed).toBe(false);
    expect(loaded.map((m) => m.name)).toEqual(["w1", "w2"]);

    await expect(replica.apply(bus, m1)).rejects.toThrow(WeightsError);
    await expect(replica.apply(bus, m2)).rejects.toThrow(WeightsError);
    expect(replica.serving.version).toBe(2);
    expect(nameOf(replica.serving.model)).toBe("w2");
    // Nothing was loaded for the refused versions.
    expect(loaded).toHaveLength(2);
    // Requests still run against the served pair.
    const pair = await replica.withModels((c, r) => [c.version, r.version]);
    expect(pair).toEqual([2, 1]);
  });

  it("policy replica - concurrent applies never go back to an older version", async () => {
    const bus = newBus();
    const replica = newReplica();
    const m1 = await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    const reference = { objectName: m1.objectName, sha256: m1.sha256, version: 1 };
    const m2 = await publishWeights(bus, {
      blob: text("w2"),
      runId: "r",
      step: 1,
      modelKind: "fake",
      reference,
    });
    const m3 = await publishWeights(bus, {
      blob: text("w3"),
      runId: "r",
      step: 2,
      modelKind: "fake",
      reference,
    });
    await replica.apply(bus, m1);
    const results = await Promise.allSettled([replica.apply(bus, m3), replica.apply(bus, m2)]);
    expect(replica.serving.version).toBe(3);
    expect(nameOf(replica.serving.model)).toBe("w3");
    expect(results[0].status).toBe("fulfilled");
    expect(results[1].status === "rejected" && results[1].reason instanceof WeightsError).toBe(true);
  });

  it("policy replica - apply of a corrupt or mismatching blob fails and keeps the old weights", async () => {
    const bus = newBus();
    const replica = newReplica();
    await replica.apply(
      bus,
      await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" }),
    );
    const corrupt = await publishByHand(bus, 2, text("w2"), { corrupt: true });
    await expect(replica.apply(bus, corrupt)).rejects.toThrow(ObjectIntegrityError);
    const lying = await publishByHand(bus, 3, text("w3"), { claimedSha256: sha256(text("something else")) });
    await expect(replica.apply(bus, lying)).rejects.toThrow(ObjectIntegrityError);
    expect(replica.serving.version).toBe(1);
    expect(nameOf(replica.serving.model)).toBe("w1");
    expect((replica.serving.model as FakeModel).disposed).toBe(false);
  });

  it("policy replica - a following replica serves the version published after it started", async () => {
    const bus = newBus();
    const logs: string[] = [];
    const replica = newReplica((l) => logs.push(l));
    await replica.follow(bus);
    expect(replica.serving.version).toBe(0);
    const m1 = await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    await poll("v1", () => replica.serving.version === 1);
    expect(nameOf(replica.serving.model)).toBe("w1");
    const reference = { objectName: m1.objectName, sha256: m1.sha256, version: 1 };
    await publishWeights(bus, { blob: text("w2"), runId: "r", step: 1, modelKind: "fake", reference });
    await poll("v2", () => replica.serving.version === 2);
    expect(nameOf(replica.serving.model)).toBe("w2");
    expect(replica.referenceModel.version).toBe(1);
    expect(replica.lastSwapError).toBe("");
    expect(logs.some((l) => l.includes("now serving weights v2"))).toBe(true);
  });

  it("policy replica - a replica that starts following late picks up the current version", async () => {
    const bus = newBus();
    await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    await publishWeights(bus, { blob: text("w2"), runId: "r", step: 1, modelKind: "fake" });
    const replica = newReplica();
    await replica.follow(bus);
    await poll("v2", () => replica.serving.version === 2);
    expect(nameOf(replica.serving.model)).toBe("w2");
  });

  it("policy replica - follow resolves once the version published before it is served (a cold start serves the run's weights)", async () => {
    const bus = newBus();
    await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    const logs: string[] = [];
    const replica = newReplica((l) => logs.push(l));
    const before = loaded.length;
    expect(await replica.follow(bus)).toBe(true);
    // No polling: the catch-up is done when follow resolves.
    expect(replica.serving.version).toBe(1);
    expect(nameOf(replica.serving.model)).toBe("w1");
    // The watch's first delivery is the same manifest: not built again, not logged again.
    await new Promise((r) => setTimeout(r, 20));
    expect(loaded.length - before).toBe(1);
    expect(logs.filter((l) => l.includes("now serving weights v1"))).toHaveLength(1);
  });

  it("policy replica - follow resolves false with nothing published, or with a refused version it logs once", async () => {
    const bus = newBus();
    expect(await newReplica().follow(bus)).toBe(false);
    await publishByHand(bus, 1, text("w1"), { corrupt: true });
    const logs: string[] = [];
    const replica = newReplica((l) => logs.push(l));
    expect(await replica.follow(bus)).toBe(false);
    expect(replica.serving.version).toBe(0);
    expect(replica.lastSwapError).toMatch(/SHA-256/);
    await new Promise((r) => setTimeout(r, 20));
    expect(logs.filter((l) => l.includes("could not swap"))).toHaveLength(1);
  });

  it("policy replica - a following replica keeps the old version when a published blob is corrupt", async () => {
    const bus = newBus();
    const logs: string[] = [];
    const replica = newReplica((l) => logs.push(l));
    await replica.follow(bus);
    await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    await poll("v1", () => replica.serving.version === 1);

    await publishByHand(bus, 2, text("w2"), { corrupt: true });
    await poll("the failed swap", () => replica.lastSwapError !== "");
    expect(replica.serving.version).toBe(1);
    expect(nameOf(replica.serving.model)).toBe("w1");
    expect(replica.lastSwapError).toMatch(/SHA-256/);
    expect(logs.some((l) => l.includes("kept v1") && l.includes("v2"))).toBe(true);
    // Still answering with the old weights.
    expect(await replica.withModels((c) => nameOf(c.model))).toBe("w1");

    // A manifest that lies about an intact blob is refused the same way.
    await publishByHand(bus, 3, text("w3"), { claimedSha256: sha256(text("not w3")) });
    await poll("the second failed swap", () => replica.lastSwapError.includes("manifest"));
    expect(replica.serving.version).toBe(1);

    // The next good version is taken, and the error clears.
    await publishWeights(bus, { blob: text("w4"), runId: "r", step: 3, modelKind: "fake" });
    await poll("v4", () => replica.serving.version === 4);
    expect(nameOf(replica.serving.model)).toBe("w4");
    expect(replica.lastSwapError).toBe("");
  });

  it("policy replica - close stops following and frees the models", async () => {
    const bus = newBus();
    const replica = new PolicyReplica(new FakeModel("checkpoint"), loader);
    await replica.follow(bus);
    await publishWeights(bus, { blob: text("w1"), runId: "r", step: 0, modelKind: "fake" });
    await poll("v1", () => replica.serving.version === 1);
    const served = replica.serving.model as FakeModel;
    await replica.close();
    expect(served.disposed).toBe(true);
    await publishWeights(bus, { blob: text("w2"), runId: "r", step: 1, modelKind: "fake" });
    await new Promise((r) => setTimeout(r, 20));
    expect(replica.serving.version).toBe(1);
    expect(loaded.map((m) => m.name)).toEqual(["w1"]);
  });
});
