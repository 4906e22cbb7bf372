/**
 * Per-tensor delta versions on a MemoryBus: the publisher stores only the tensors that changed
 * from its parent (a full version every `fullEvery`), a replica following every version ends on
 * exactly the bytes of a replica fed full versions, a tampered delta is refused (the old weights
 * keep serving), a replica started late rebuilds the chain from the stored manifests, and
 * retention never deletes a blob a retained delta needs. The replica's loader names each model
 * by its blob's SHA-256, so "serving v" means "serving these exact bytes".
 */
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { MessageChannel } from "node:worker_threads";
import { toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import {
  type WeightsManifest,
  WeightsManifestSchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { PortBus, serveBusOverPort } from "../services/core/src/bus/port-bus.js";
import {
  LATEST_WEIGHTS_KEY,
  weightsObjectName,
  weightsObjectVersion,
} from "../services/core/src/bus/subjects.js";
import { ObjectIntegrityError, ValidationError, WeightsError } from "../services/core/src/errors.js";
import type { WeightMap } from "../services/core/src/model/causal-lm.js";
import { encodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import { manifestObjectNames } from "../services/core/src/weights/weights-channel.js";
import { generateWeightsKeyPair } from "../services/core/src/weights/weights-keys.js";
import {
  type PublishWeightsInput,
  WeightsPublisher,
} from "../services/core/src/weights/weights-publisher.js";
import { signerOf, verifierOf } from "../services/core/src/weights/weights-signing.js";
import type { ModelLoader } from "../services/policy/loaded-model.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";
import { FakeModel, nameOf, poll } from "./helpers/fake-model.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Models named by the SHA-256 of the blob they were built from. */
const loader: ModelLoader = {
  fromFile: (p) => new FakeModel(`file:${p}`),
  fromBlob: (blob) => new FakeModel(sha256(blob)),
};

const { privatePem, publicPem } = generateWeightsKeyPair();
const signer = signerOf(createPrivateKey(privatePem));
const verifier = verifierOf(createPublicKey(publicPem));

const buses: MemoryBus[] = [];
const replicas: PolicyReplica[] = [];
afterEach(async () => {
  for (const r of replicas.splice(0)) await r.close();
  for (const b of buses.splice(0)) await b.close();
});

function newBus(): MemoryBus {
  const bus = new MemoryBus();
  buses.push(bus);
  return bus;
}

function newReplica(log?: (line: string) => void): PolicyReplica {
  const r = new PolicyReplica(new FakeModel("checkpoint"), loader, log, { verifier });
  replicas.push(r);
  return r;
}

/** Four tensors of 4096 floats each; `changed` lists those whose values move at version `v`. */
function weightsAt(v: number, changed: (name: string) => boolean): Uint8Array {
  const w: WeightMap = new Map();
  for (const name of ["a", "b", "c", "d"]) {
    const data = new Float32Array(4096);
    const k = changed(name) ? v : 0;
    for (let i = 0; i < data.length; i++) data[i] = Math.sin(i + name.charCodeAt(0)) + k * 0.001;
    w.set(name, { shape: [64, 64], data });
  }
  return encodeSafetensors(w, { format: "test" });
}

/** The run's reference: its first version. */
type Reference = NonNullable<PublishWeightsInput["reference"]>;
const referenceOf = (m: WeightsManifest): Reference => ({
  objectName: m.objectName,
  sha256: m.sha256,
  version: Number(m.version),
});

/** One more version of the run whose reference is `reference` (none: this is its first). */
function publishOne(
  bus: MemoryBus,
  publisher: WeightsPublisher,
  blob: Uint8Array,
  step: number,
  reference?: Reference,
): Promise<WeightsManifest> {
  return publisher.publish(bus, {
    blob,
    runId: "delta",
    step,
    modelKind: "fake",
    ...(reference ? { reference } : {}),
  });
}

/** A run's versions: the first full (its reference), then the rest of `blobs` on it. */
async function publishRun(
  bus: MemoryBus,
  publisher: WeightsPublisher,
  blobs: Uint8Array[],
): Promise<WeightsManifest[]> {
  const out: WeightsManifest[] = [];
  for (const [step, blob] of blobs.entries()) {
    out.push(await publishOne(bus, publisher, blob, step, out[0] ? referenceOf(out[0]) : undefined));
  }
  return out;
}

/** Versions where only tensor "b" trains (the rest frozen), as a LoRA run's A matrices at first. */
const onlyB = (n: number) => Array.from({ length: n }, (_, v) => weightsAt(v, (t) => t === "b"));

describe("weights delta", () => {
  it("weights delta - a version stores only the changed tensors; every fullEvery-th and all-changed versions are full", async () => {
    const bus = newBus();
    const publisher = new WeightsPublisher({ signer, fullEvery: 3 });
    const blobs = [...onlyB(5), weightsAt(9, () => true)];
    const ms = await publishRun(bus, publisher, blobs);
    // v1 full (the reference), v2-v3 deltas, v4 full (chain of 3), v5 delta, v6 all changed: full.
    expect(ms.map((m) => Number(m.baseVersion))).toEqual([0, 1, 2, 0, 4, 0]);
    expect(ms.map((m) => Number(m.fullVersion))).toEqual([1, 1, 1, 4, 4, 6]);
    const full = blobs[0]?.length as number;
    const tensorBytes = 4096 * 4;
    for (const [i, m] of ms.entries()) {
      // The manifest describes the full blob; only blob_size_bytes is the delta's.
      expect(m.sha256).toBe(sha256(blobs[i] as Uint8Array));
      expect(Number(m.sizeBytes)).toBe(full);
      if (m.baseVersion === 0n) {
        expect(Number(m.blobSizeBytes)).toBe(full);
        expect(m.objectName).toMatch(/\.safetensors$/);
        continue;
      }
      expect(m.objectName).toMatch(/\.delta$/);
      expect(m.tensors.map((t) => `${t.name}:${t.unchanged}`)).toEqual([
        "a:true",
        "b:false",
        "c:true",
        "d:true",
      ]);
      // The header, then one tensor: far less than the four.
      expect(Number(m.blobSizeBytes)).toBe(full - 3 * tensorBytes);
      expect(m.baseSha256).toBe(ms[i - 1]?.sha256);
    }
  });

  it("weights delta - fullEvery 1 publishes every version full, and a bad fullEvery is refused", async () => {
    const bus = newBus();
    const ms = await publishRun(bus, new WeightsPublisher({ signer, fullEvery: 1 }), onlyB(3));
    expect(ms.every((m) => m.baseVersion === 0n && m.blobSizeBytes === m.sizeBytes)).toBe(true);
    expect(() => new WeightsPublisher({ fullEvery: 0 })).toThrow(ValidationError);
  });

  it("weights delta - a replica following deltas serves bitwise the weights a replica fed full versions serves", async () => {
    const blobs = onlyB(6);
    const served: string[][] = [];
    for (const fullEvery of [4, 1]) {
      const bus = newBus();
      const replica = newReplica();
      await replica.follow(bus);
      const seen: string[] = [];
      const publisher = new WeightsPublisher({ signer, fullEvery });
      let first: WeightsManifest | undefined;
      for (const [step, blob] of blobs.entries()) {
        const m = await publishOne(bus, publisher, blob, step, first ? referenceOf(first) : undefined);
        first ??= m;
        expect(m.baseVersion > 0n).toBe(fullEvery > 1 && step % 4 !== 0);
        await poll(`v${m.version}`, () => replica.serving.version === Number(m.version));
        expect(replica.lastSwapError).toBe("");
        seen.push(nameOf(replica.serving.model));
      }
      served.push(seen);
    }
    expect(served[0]).toEqual(blobs.map(sha256));
    expect(served[0]).toEqual(served[1]);
  });

  it("weights delta - a tampered delta is refused naming the tensor, and the replica keeps serving its version", async () => {
    const bus = newBus();
    const publisher = new WeightsPublisher({ signer, fullEvery: 10 });
    const replica = newReplica();
    const blobs = onlyB(3);
    const [m1, m2] = await publishRun(bus, publisher, blobs.slice(0, 2));
    await replica.apply(bus, m1 as WeightsManifest);
    await replica.apply(bus, m2 as WeightsManifest);
    const m3 = await publishOne(
      bus,
      publisher,
      blobs[2] as Uint8Array,
      2,
      referenceOf(m1 as WeightsManifest),
    );
    expect(m3.baseVersion).toBe(2n);
    // Someone with NATS access replaces the delta (the store's own digest is fresh).
    const objects = await bus.objects();
    const delta = await objects.get(m3.objectName as string);
    delta[delta.length - 1] = (delta[delta.length - 1] as number) ^ 0xff;
    await objects.put(m3.objectName as string, delta);
    await expect(replica.apply(bus, m3)).rejects.toThrow(ObjectIntegrityError);
    await expect(replica.apply(bus, m3)).rejects.toThrow(/tensor 'b'/);
    expect(replica.serving.version).toBe(2);
    expect(nameOf(replica.serving.model)).toBe(sha256(blobs[1] as Uint8Array));
  });

  it("weights delta - a replica started late rebuilds the chain from the stored manifests and catches up", async () => {
    const bus = newBus();
    const blobs = onlyB(5);
    const ms = await publishRun(bus, new WeightsPublisher({ signer, fullEvery: 10 }), blobs);
    expect(ms.at(-1)?.baseVersion).toBe(4n);
    const logs: string[] = [];
    const late = newReplica((l) => logs.push(l));
    await late.follow(bus);
    await poll("the late replica on v5", () => late.serving.version === 5);
    expect(late.lastSwapError).toBe("");
    expect(nameOf(late.serving.model)).toBe(sha256(blobs[4] as Uint8Array));
    expect(logs.filter((l) => l.includes("could not swap"))).toEqual([]);
  });

  it("weights delta - a replica that missed versions catches up, then applies the next delta on the blob it holds", async () => {
    const bus = newBus();
    const publisher = new WeightsPublisher({ signer, fullEvery: 10 });
    const blobs = onlyB(6);
    const [m1] = await publishRun(bus, publisher, blobs.slice(0, 4));
    const replica = newReplica();
    await replica.follow(bus);
    await poll("v4", () => replica.serving.version === 4);
    const objects = await bus.objects();
    const m5 = await publishOne(
      bus,
      publisher,
      blobs[4] as Uint8Array,
      4,
      referenceOf(m1 as WeightsManifest),
    );
    await poll("v5", () => replica.serving.version === 5);
    // v6's base is v5, which the replica holds: it needs v6's delta only, so the older blobs
    // and manifests may be gone.
    for (const { name } of await objects.list())
      if ((weightsObjectVersion(name) ?? 0) < 5) await objects.delete(name);
    const m6 = await publishOne(
      bus,
      publisher,
      blobs[5] as Uint8Array,
      5,
      referenceOf(m1 as WeightsManifest),
    );
    expect([m5.baseVersion, m6.baseVersion]).toEqual([4n, 5n]);
    await poll("v6", () => replica.serving.version === 6);
    expect(replica.lastSwapError).toBe("");
    expect(nameOf(replica.serving.model)).toBe(sha256(blobs[5] as Uint8Array));
  });

  it("weights delta - a late replica refuses a chain whose stored manifest is not signed by its key", async () => {
    const bus = newBus();
    const ms = await publishRun(bus, new WeightsPublisher({ signer, fullEvery: 10 }), onlyB(3));
    const v2 = ms[1] as WeightsManifest;
    // Replace v2's stored manifest by one signed with another key.
    const other = signerOf(createPrivateKey(generateWeightsKeyPair().privatePem));
    const forged = await publishRun(
      newBus(),
      new WeightsPublisher({ signer: other, fullEvery: 10 }),
      onlyB(2),
    );
    await (await bus.objects()).put(
      weightsObjectName(2, v2.sha256, "manifest"),
      toBinary(WeightsManifestSchema, forged[1] as WeightsManifest),
    );
    const late = newReplica();
    await expect(late.apply(bus, ms[2] as WeightsManifest)).rejects.toThrow(WeightsError);
    await expect(late.apply(bus, ms[2] as WeightsManifest)).rejects.toThrow(/stored manifest of v2/);
    expect(late.serving.version).toBe(0);
  });

  it("weights delta - retention keeps every blob a retained delta's chain needs, and collects it once a full version follows", async () => {
    const bus = newBus();
    const publisher = new WeightsPublisher({ signer, fullEvery: 3, retention: 1 });
    const objects = await bus.objects();
    const versions = async () =>
      [...new Set((await objects.list()).map((o) => weightsObjectVersion(o.name)))].sort(
        (a, b) => (a ?? 0) - (b ?? 0),
      );
    const blobs = onlyB(5);
    const [m1] = await publishRun(bus, publisher, blobs.slice(0, 3));
    const ref = referenceOf(m1 as WeightsManifest);
    // v3 is a delta on v2 on v1 (full): all three are kept although retention is 1.
    await publisher.settled();
    expect(await versions()).toEqual([1, 2, 3]);
    await publishOne(bus, publisher, blobs[3] as Uint8Array, 3, ref);
    await publisher.settled();
    // v4 is full (a chain of 3): v2 and v3 go; v1 stays as the run's reference.
    expect(await versions()).toEqual([1, 4]);
    const late = newReplica();
    await late.follow(bus);
    await poll("v4", () => late.serving.version === 4);
    await publishOne(bus, publisher, blobs[4] as Uint8Array, 4, ref);
    await poll("v5", () => late.serving.version === 5);
    expect(nameOf(late.serving.model)).toBe(sha256(blobs[4] as Uint8Array));
  });

  it("weights delta - a replica behind the Policy thread's bus bridge follows deltas and, started late, catches up", async () => {
    const bus = newBus();
    const publisher = new WeightsPublisher({ signer, fullEvery: 10 });
    const blobs = onlyB(5);
    const [m1] = await publishRun(bus, publisher, blobs.slice(0, 3));
    // What embedded mode does (cluster/policy-thread.ts): the bus over a MessagePort, the
    // entry's blobs sent with it.
    const { port1, port2 } = new MessageChannel();
    const stop = serveBusOverPort(bus, port1, {
      sendWithEntry: (key, value) => (key === LATEST_WEIGHTS_KEY ? manifestObjectNames(value) : []),
    });
    const remote = new PortBus(port2);
    try {
      const replica = newReplica();
      await replica.follow(remote);
      await poll("v3 over the bridge", () => replica.serving.version === 3);
      for (const [i, blob] of blobs.slice(3).entries()) {
        const m = await publishOne(bus, publisher, blob, 3 + i, referenceOf(m1 as WeightsManifest));
        expect(m.baseVersion).toBe(BigInt(3 + i));
        await poll(`v${m.version} over the bridge`, () => replica.serving.version === Number(m.version));
      }
      expect(replica.lastSwapError).toBe("");
      expect(nameOf(replica.serving.model)).toBe(sha256(blobs[4] as Uint8Array));
    } finally {
      await remote.close();
      stop();
      port1.close();
    }
  });

  it("weights delta - a staged delta whose number another writer took is stored again in full under the next one", async () => {
    const bus = newBus();
    const publisher = new WeightsPublisher({ signer, fullEvery: 10 });
    const blobs = onlyB(3);
    const [m1] = await publishRun(bus, publisher, blobs.slice(0, 2));
    const reference = referenceOf(m1 as WeightsManifest);
    const staged = await publisher.stage(bus, {
      blob: blobs[2] as Uint8Array,
      runId: "delta",
      step: 2,
      modelKind: "fake",
      reference,
    });
    expect(staged.delta?.base.version).toBe(2);
    // Another Optimizer with the same key moves the pointer to v3 first.
    await publishOne(
      bus,
      new WeightsPublisher({ signer }),
      weightsAt(50, () => true),
      9,
    );
    const m = await publisher.commit(bus, staged);
    expect([m.version, m.baseVersion, m.parentVersion]).toEqual([4n, 0n, 3n]);
    expect(m.blobSizeBytes).toBe(m.sizeBytes);
    expect((await (await bus.objects()).list()).map((o) => o.name)).not.toContain(staged.objectName);
    const replica = newReplica();
    await replica.apply(bus, m);
    expect(nameOf(replica.serving.model)).toBe(sha256(blobs[2] as Uint8Array));
  });
});
