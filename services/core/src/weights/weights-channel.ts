/**
 * How weights travel from the Optimizer to the Policy replicas: blobs in the Object Store, and a
 * `WeightsManifest` under the latest-version KV key, moved by compare-and-set.
 *
 * The Optimizer is the only writer; replicas only read. Compare-and-set makes versions strictly
 * increasing even if two Optimizers race (one of them retries with the next number), and the
 * SHA-256 in the manifest lets a replica refuse a blob that does not match what was published.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type WeightsManifest, WeightsManifestSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import type { Bus, KvEntry } from "../bus/bus.js";
import { LATEST_WEIGHTS_KEY, weightsObjectName } from "../bus/subjects.js";
import { KvConflictError, ObjectIntegrityError } from "../errors.js";
import { sha256Hex } from "../hash.js";

/** What the Optimizer says about a blob it publishes. */
export interface PublishWeightsInput {
  blob: Uint8Array;
  runId: string;
  step: number;
  modelKind: string;
  /** The run's reference weights; omit on a run's first publish to make this blob the reference. */
  reference?: { objectName: string; sha256: string; version: number };
}

function decodeManifest(entry: KvEntry): WeightsManifest {
  return fromBinary(WeightsManifestSchema, entry.value);
}

/** The latest published manifest and its KV revision, or null before the first publish. */
export async function readLatestWeights(
  bus: Bus,
): Promise<{ manifest: WeightsManifest; revision: number } | null> {
  const entry = await (await bus.kv()).get(LATEST_WEIGHTS_KEY);
  return entry ? { manifest: decodeManifest(entry), revision: entry.revision } : null;
}

/**
 * Store a blob as the next version and move the latest pointer to it.
 * The version is one more than the current pointer's; on a lost compare-and-set the next number
 * is tried. Blob names carry the content hash, so concurrent publishers never overwrite each other.
 */
export async function publishWeights(bus: Bus, input: PublishWeightsInput): Promise<WeightsManifest> {
  const kv = await bus.kv();
  const objects = await bus.objects();
  const sha256 = sha256Hex(input.blob);
  for (let attempt = 0; attempt < 10; attempt++) {
    const latest = await readLatestWeights(bus);
    const version = latest ? Number(latest.manifest.version) + 1 : 1;
    // 1. Store the blob under a name no other publisher can use (version + content hash).
    const objectName = weightsObjectName(version, sha256);
    const info = await objects.put(objectName, input.blob);
    const manifest = create(WeightsManifestSchema, {
      version: BigInt(version),
      runId: input.runId,
      step: input.step,
      objectName,
      sha256: info.sha256,
      sizeBytes: BigInt(info.size),
      referenceObjectName: input.reference?.objectName ?? objectName,
      referenceSha256: input.reference?.sha256 ?? info.sha256,
      referenceVersion: BigInt(input.reference?.version ?? version),
      modelKind: input.modelKind,
      createdUnixMs: BigInt(Date.now()),
    });
    // 2. Move the pointer only if nobody else did since we read it.
    try {
      await kv.update(LATEST_WEIGHTS_KEY, toBinary(WeightsManifestSchema, manifest), latest?.revision ?? 0);
      return manifest;
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err;
      // 3. Lost the race: that version is the winner's. Drop our blob (unless the winner's blob is
      //    byte-identical, hence the same name) and try the next number.
      const now = await readLatestWeights(bus);
      const names = [now?.manifest.objectName, now?.manifest.referenceObjectName];
      if (!names.includes(objectName)) await objects.delete(objectName);
    }
  }
  throw new KvConflictError(
    "could not move the latest-weights pointer after 10 attempts (too many publishers?)",
  );
}

/**
 * Read a blob and check it against the SHA-256 the manifest promised. The bus verifies its own
 * digest too; this second check binds the blob to the manifest, so a blob replaced under the
 * same name (with a fresh store digest) is still refused.
 */
export async function fetchWeightsBlob(bus: Bus, objectName: string, sha256: string): Promise<Uint8Array> {
  const blob = await (await bus.objects()).get(objectName);
  const actual = sha256Hex(blob);
  if (actual !== sha256) {
    throw new ObjectIntegrityError(
      `weights ${objectName}: SHA-256 ${actual} does not match the manifest's ${sha256}`,
    );
  }
  return blob;
}

/**
 * The blobs a replica reads after seeing the latest-weights entry `value`: the weights and the
 * run's reference weights. Lets a bridge send them along with the entry (bus/port-bus.ts).
 */
export function manifestObjectNames(value: Uint8Array): string[] {
  const m = fromBinary(WeightsManifestSchema, value);
  return [m.objectName, m.referenceObjectName].filter((n) => n !== "");
}

/** Call `onManifest` with the current manifest (if any) and every later one, in order. */
export async function watchLatestWeights(
  bus: Bus,
  onManifest: (manifest: WeightsManifest) => void,
): Promise<() => void> {
  return (await bus.kv()).watch(LATEST_WEIGHTS_KEY, (entry) => onManifest(decodeManifest(entry)));
}
