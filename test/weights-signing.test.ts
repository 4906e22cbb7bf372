/**
 * Signed weights: Ed25519 signatures over manifests, key files, per-tensor digests, and a Policy
 * replica with a verify key refusing every manifest the Optimizer did not sign or that does not
 * fit its log (unsigned, another key, an altered field, a replayed or absurd version, a broken
 * parent chain, a tampered tensor), each logged while it keeps serving. On a MemoryBus with fake
 * models (a blob's text is the model's name).
 */
import { spawnSync } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clone, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import {
  type WeightsManifest,
  WeightsManifestSchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { LATEST_WEIGHTS_KEY } from "../services/core/src/bus/subjects.js";
import { ConfigError, ObjectIntegrityError, WeightsError } from "../services/core/src/errors.js";
import { encodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import { fetchWeightsBlob, WeightsPublisher } from "../services/core/src/weights/weights-channel.js";
import { clusterWeightsKeys, writeWeightsKeyPair } from "../services/core/src/weights/weights-keys.js";
import { MAX_VERSION_JUMP } from "../services/core/src/weights/weights-manifest.js";
import {
  keyIdOf,
  loadSigningKey,
  loadVerifyKey,
  signatureProblem,
  signedBytes,
  signerOf,
  signManifest,
  type WeightsSigner,
} from "../services/core/src/weights/weights-signing.js";
import { digestBlob } from "../services/core/src/weights/weights-stream.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";
import { FakeModel, fakeLoader, poll } from "./helpers/fake-model.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";

const newSigner = (): WeightsSigner => signerOf(generateKeyPairSync("ed25519").privateKey);
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const text = (s: string) => new TextEncoder().encode(s);

/** A two-tensor safetensors blob; `seed` makes the values differ between versions. */
function tensorBlob(seed: number): Uint8Array {
  const weights = new Map([
    ["a.weight", { shape: [2, 3], data: Float32Array.from({ length: 6 }, (_, i) => seed + i) }],
    ["b.bias", { shape: [4], data: Float32Array.from({ length: 4 }, (_, i) => seed * 10 + i) }],
  ]);
  return encodeSafetensors(weights, { format: "pt" });
}

const buses: MemoryBus[] = [];
const replicas: PolicyReplica[] = [];
afterEach(async () => {
  for (const r of replicas.splice(0)) await r.close();
  for (const b of buses.splice(0)) await b.close();
});

function setup(signer = newSigner()) {
  const bus = new MemoryBus();
  buses.push(bus);
  const logs: string[] = [];
  const replica = new PolicyReplica(new FakeModel("checkpoint"), fakeLoader(), (l) => logs.push(l), {
    verifier: signer,
  });
  replicas.push(replica);
  const publisher = new WeightsPublisher({ signer, log: (l) => logs.push(l) });
  return { bus, replica, publisher, signer, logs };
}

const input = (blob: Uint8Array, step: number) => ({ blob, runId: "r", step, modelKind: "fake" });

describe("weights signing - signatures and keys", () => {
  it("weights signing - a signed manifest verifies; a changed field, another key or no signature does not", () => {
    const signer = newSigner();
    const m = create(WeightsManifestSchema, { version: 3n, runId: "r", step: 2, sha256: "ab".repeat(32) });
    const signed = signManifest(m, signer);
    expect(signed.signature).toHaveLength(64);
    expect(signed.keyId).toBe(keyIdOf(signer.publicKey));
    expect(signed.keyId).toMatch(/^[0-9a-f]{64}$/);
    expect(signatureProblem(signed, signer)).toBeNull();
    // Through the wire and back: still valid.
    expect(
      signatureProblem(fromBinary(WeightsManifestSchema, toBinary(WeightsManifestSchema, signed)), signer),
    ).toBeNull();
    const altered = clone(WeightsManifestSchema, signed);
    altered.step = 3;
    expect(signatureProblem(altered, signer)).toMatch(/does not verify/);
    expect(signatureProblem(signed, newSigner())).toMatch(/signed by key .* not the trusted key/);
    expect(signatureProblem(m, signer)).toMatch(/unsigned/);
  });

  it("weights signing - the publish's traceparent is signed; a manifest without it signs the same bytes as before", async () => {
    const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const { bus, publisher, signer } = setup();
    const m = await publisher.publish(bus, input(text("w1"), 0), tp);
    expect(m.traceparent).toBe(tp);
    expect(signatureProblem(m, signer)).toBeNull();
    const altered = clone(WeightsManifestSchema, m);
    altered.traceparent = tp.replace("b7ad", "0000");
    expect(signatureProblem(altered, signer)).toMatch(/does not verify/);
    // Left empty, the field is not encoded: the signed bytes are those of the schema without it.
    const old = create(WeightsManifestSchema, { version: 3n, runId: "r", step: 2, sha256: "ab".repeat(32) });
    expect(signedBytes(old)).toEqual(signedBytes(create(WeightsManifestSchema, { ...old, traceparent: "" })));
    const withTp = signedBytes(create(WeightsManifestSchema, { ...old, traceparent: tp }));
    expect(withTp.length).toBeGreaterThan(signedBytes(old).length);
    expect(signatureProblem(signManifest(old, signer), signer)).toBeNull();
  });

  it("weights signing - a reader that does not know a newer field still verifies the manifest", () => {
    const signer = newSigner();
    // Field 40 (tag varint 0xc0 0x02, value 7) stands for a field added after this schema.
    const bytes = toBinary(WeightsManifestSchema, create(WeightsManifestSchema, { version: 5n, runId: "r" }));
    const withNewer = fromBinary(WeightsManifestSchema, new Uint8Array([...bytes, 0xc0, 0x02, 7]));
    const wire = toBinary(WeightsManifestSchema, signManifest(withNewer, signer));
    expect(signatureProblem(fromBinary(WeightsManifestSchema, wire), signer)).toBeNull();
    // Dropping the unknown field changes what was signed.
    const dropped = fromBinary(WeightsManifestSchema, wire, { readUnknownFields: false });
    expect(signatureProblem(dropped, signer)).toMatch(/does not verify/);
  });

  it("weights signing - key files are PEM, mode 0600; a wrong, private or missing key is a ConfigError naming the setting", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rlaif-keys-"));
    const files = await writeWeightsKeyPair(join(dir, "keys"));
    for (const f of [files.signingKey, files.verifyKey]) expect((await stat(f)).mode & 0o777).toBe(0o600);
    const signer = await loadSigningKey(files.signingKey);
    const verifier = await loadVerifyKey(files.verifyKey);
    expect(verifier.keyId).toBe(signer.keyId);
    await expect(loadVerifyKey(files.signingKey)).rejects.toThrow(/weightsVerifyKey: .* holds a private key/);
    await expect(loadSigningKey(join(dir, "absent.pem"))).rejects.toThrow(ConfigError);
    await expect(loadSigningKey(join(dir, "absent.pem"))).rejects.toThrow(/weightsSigningKey: cannot read/);
    const x25519 = join(dir, "x25519.pem");
    const other = generateKeyPairSync("x25519").privateKey.export({ type: "pkcs8", format: "pem" });
    await writeFile(x25519, other as string);
    await expect(loadSigningKey(x25519)).rejects.toThrow(
      /expected an Ed25519 private key, got a private x25519 key/,
    );
  });

  it("weights signing - a cluster's keys: a pair per run unless configured; a lone or mismatched verify key is refused", async () => {
    const made = await clusterWeightsKeys({ weightsSigningKey: "", weightsVerifyKey: "" });
    expect(made.ephemeral).toBe(true);
    expect((await stat(made.signingKey)).mode & 0o777).toBe(0o600);
    expect((await stat(join(made.signingKey, ".."))).mode & 0o777).toBe(0o700);
    expect((await loadVerifyKey(made.verifyKey)).keyId).toBe((await loadSigningKey(made.signingKey)).keyId);
    // Only a signing key: the replicas get its public half.
    const half = await clusterWeightsKeys({ weightsSigningKey: made.signingKey, weightsVerifyKey: "" });
    expect((await loadVerifyKey(half.verifyKey)).keyId).toBe((await loadSigningKey(made.signingKey)).keyId);
    await half.dispose();
    await expect(
      clusterWeightsKeys({ weightsSigningKey: "", weightsVerifyKey: made.verifyKey }),
    ).rejects.toThrow(/weightsVerifyKey is set without weightsSigningKey/);
    const other = await writeWeightsKeyPair(mkdtempSync(join(tmpdir(), "rlaif-keys-")));
    await expect(
      clusterWeightsKeys({ weightsSigningKey: made.signingKey, weightsVerifyKey: other.verifyKey }),
    ).rejects.toThrow(/is not the public half of weightsSigningKey/);
    await made.dispose();
    await expect(stat(made.signingKey)).rejects.toThrow(/ENOENT/);
  });

  it("weights signing - rlaif keygen writes a usable pair, and refuses to overwrite it (exit 2)", async () => {
    const out = join(mkdtempSync(join(tmpdir(), "rlaif-keygen-")), "keys");
    const first = spawnSync(process.execPath, [RLAIF_BIN, "keygen", "--out", out], { encoding: "utf8" });
    expect(first.status, first.stderr).toBe(0);
    const signer = await loadSigningKey(join(out, "weights-signing.pem"));
    expect((await loadVerifyKey(join(out, "weights-verify.pem"))).keyId).toBe(signer.keyId);
    expect(first.stdout).toContain(`key ${signer.keyId}`);
    const again = spawnSync(process.execPath, [RLAIF_BIN, "keygen", "--out", out], { encoding: "utf8" });
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/weights-signing\.pem exists: a key file is never overwritten/);
    expect((await loadSigningKey(join(out, "weights-signing.pem"))).keyId).toBe(signer.keyId);
  });
});

describe("weights signing - tensors and the replica's refusals", () => {
  it("weights signing - per-tensor digests come from the safetensors header; other blobs have none", () => {
    const blob = tensorBlob(1);
    const tensors = digestBlob(blob).tensors;
    expect(tensors.map((t) => [t.name, t.dtype, t.shape.map(Number)])).toEqual([
      ["a.weight", "F32", [2, 3]],
      ["b.bias", "F32", [4]],
    ]);
    const headerEnd = blob.length - 40;
    expect(tensors[0]?.sha256).toBe(sha256(blob.subarray(headerEnd, headerEnd + 24)));
    expect(tensors[1]?.sha256).toBe(sha256(blob.subarray(headerEnd + 24)));
    expect(digestBlob(text("plain bytes")).tensors).toEqual([]);
  });

  it("weights signing - one tampered tensor byte is refused naming the tensor, and the old weights stay", async () => {
    const { bus, replica, publisher } = setup();
    await replica.apply(bus, await publisher.publish(bus, input(tensorBlob(1), 0)));
    const m2 = await publisher.publish(bus, input(tensorBlob(2), 1));
    const tampered = tensorBlob(2);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1; // last byte of b.bias
    await (await bus.objects()).put(m2.objectName, tampered);
    await expect(replica.apply(bus, m2)).rejects.toThrow(ObjectIntegrityError);
    await expect(fetchWeightsBlob(bus, m2.objectName, m2.sha256, m2.tensors)).rejects.toThrow(
      /tensor 'b\.bias' has SHA-256 [0-9a-f]{64}, the manifest says [0-9a-f]{64} \(tampered\)/,
    );
    expect(replica.serving.version).toBe(1);
  });

  it("weights signing - a replica with a verify key refuses unsigned, foreign, altered, old, absurd and unchained manifests", async () => {
    const { bus, replica, publisher, signer } = setup();
    const m1 = await publisher.publish(bus, input(text("w1"), 0));
    const m2 = await publisher.publish(bus, input(text("w2"), 1));
    await replica.apply(bus, m2);
    const forge = (fields: Partial<WeightsManifest>, by = signer) =>
      signManifest(create(WeightsManifestSchema, { ...m2, ...fields, signature: new Uint8Array() }), by);
    const cases: [WeightsManifest, RegExp][] = [
      [
        create(WeightsManifestSchema, { ...m2, version: 3n, keyId: "", signature: new Uint8Array() }),
        /unsigned/,
      ],
      [forge({ version: 3n }, newSigner()), /signed by key/],
      [{ ...forge({ version: 3n }), step: 99 } as WeightsManifest, /signature does not verify/],
      [m1, /version 1 is not newer than the served v2/],
      [forge({ version: 2n ** 53n + 10n }), /version 9007199254741002 is not in 1\.\./],
      [forge({ version: BigInt(2 + MAX_VERSION_JUMP + 1) }), /jumps 1000001 past the served v2/],
      [forge({ version: 3n, parentVersion: 3n }), /parent version 3 is not older than version 3/],
      [forge({ version: 3n, referenceVersion: 4n }), /reference version 4 is newer than version 3/],
    ];
    for (const [m, why] of cases) {
      await expect(replica.apply(bus, m)).rejects.toThrow(WeightsError);
      await expect(replica.apply(bus, m)).rejects.toThrow(why);
    }
    expect(replica.serving.version).toBe(2);
  });

  it("weights signing - a following replica logs each refusal, keeps serving, and takes the next signed version", async () => {
    const { bus, replica, publisher, logs } = setup();
    await replica.follow(bus);
    await publisher.publish(bus, input(text("w1"), 0));
    await poll("v1", () => replica.serving.version === 1);
    const kv = await bus.kv();
    // An attacker's unsigned manifest, then bytes that are no manifest at all.
    const evil = create(WeightsManifestSchema, { version: 7n, objectName: "x", sha256: sha256(text("x")) });
    await kv.put(LATEST_WEIGHTS_KEY, toBinary(WeightsManifestSchema, evil));
    await poll("the refusal", () => replica.lastSwapError.includes("unsigned"));
    await kv.put(LATEST_WEIGHTS_KEY, new Uint8Array([0xff, 0xff, 0xff]));
    await poll("the garbage", () => replica.lastSwapError.includes("does not hold a manifest"));
    expect(logs.some((l) => l.includes("kept v1, could not swap to v7") && l.includes("unsigned"))).toBe(
      true,
    );
    expect(replica.serving.version).toBe(1);
    await publisher.publish(bus, input(text("w2"), 1));
    await poll("v2", () => replica.serving.version === 2);
    expect(replica.lastSwapError).toBe("");
    expect(logs.some((l) => /now serving weights v2 .*signed by key [0-9a-f]{64}/.test(l))).toBe(true);
  });

  it("weights signing - a replica that starts late catches up to the latest signed version at once", async () => {
    const { bus, replica, publisher } = setup();
    for (let i = 0; i < 4; i++) await publisher.publish(bus, input(text(`w${i}`), i));
    await replica.follow(bus);
    await poll("v4", () => replica.serving.version === 4);
    expect((replica.serving.model as FakeModel).name).toBe("w3");
  });
});
