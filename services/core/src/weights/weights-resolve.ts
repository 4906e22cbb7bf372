/**
 * A replica's way from a manifest to the full, verified blob it names, full or delta.
 *
 * A full version is one streamed, verified download (`fetchWeightsBlob`). A delta is applied on
 * top of exactly its base: the replica uses the blob it serves when that is the base (same
 * version and SHA-256), which is the common case of a replica following every version. A replica
 * that holds anything else (started late, missed a version, refused one) does not wait for the
 * next full version: it reads the base's stored, signed manifest (`weights/v<base>-<hash>.manifest`),
 * and so on back to the chain's full version (at most `weightsFullEvery` − 1 deltas), downloads
 * that full blob and applies each delta after it in order. Every blob on the way is verified
 * against its own manifest, so a tampered delta or manifest anywhere in the chain is refused.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { type WeightsManifest, WeightsManifestSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../bus/bus.js";
import { weightsObjectName } from "../bus/subjects.js";
import { ObjectIntegrityError, WeightsError } from "../errors.js";
import { fetchWeightsBlob } from "./weights-channel.js";
import { applyDelta } from "./weights-delta.js";
import { chainProblem, MAX_DELTA_CHAIN } from "./weights-manifest.js";
import { signatureProblem, type WeightsVerifier } from "./weights-signing.js";
import { MAX_BLOB_BYTES } from "./weights-stream.js";

/** The weights a replica holds: a delta on them needs no other download. */
export interface HeldWeights {
  version: number;
  /** SHA-256 of the full blob ("" for a local checkpoint). */
  sha256: string;
  /** The full blob (null when not kept, e.g. a local checkpoint). */
  blob: Uint8Array | null;
}

/** An object's bytes, exactly `sizeBytes` of them (the store checks its own digest). */
async function fetchExactly(bus: Bus, objectName: string, sizeBytes: number): Promise<Uint8Array> {
  if (sizeBytes > MAX_BLOB_BYTES) {
    throw new ObjectIntegrityError(
      `weights ${objectName}: ${sizeBytes} bytes is more than a replica can hold`,
    );
  }
  const out = new Uint8Array(sizeBytes);
  let at = 0;
  for await (const chunk of (await bus.objects()).getStream(objectName)) {
    if (at + chunk.length > sizeBytes) {
      throw new ObjectIntegrityError(
        `weights ${objectName}: holds more than the manifest's ${sizeBytes} bytes`,
      );
    }
    out.set(chunk, at);
    at += chunk.length;
  }
  if (at !== sizeBytes) {
    throw new ObjectIntegrityError(
      `weights ${objectName}: holds ${at} bytes, the manifest says ${sizeBytes}`,
    );
  }
  return out;
}

/**
 * The stored manifest of `delta`'s base, checked: signed by `verifier` (when given), exactly the
 * version and full SHA-256 the (already checked) delta names, and a consistent chain.
 */
async function baseManifest(
  bus: Bus,
  delta: WeightsManifest,
  verifier?: WeightsVerifier,
): Promise<WeightsManifest> {
  const version = Number(delta.baseVersion);
  const name = weightsObjectName(version, delta.baseSha256, "manifest");
  let m: WeightsManifest;
  try {
    m = fromBinary(WeightsManifestSchema, await (await bus.objects()).get(name));
  } catch (err) {
    throw new WeightsError(
      `v${delta.version} is a delta on v${version}, whose manifest ${name} cannot be read: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const problem =
    (verifier ? signatureProblem(m, verifier) : null) ??
    (m.version !== delta.baseVersion || m.sha256 !== delta.baseSha256
      ? `it is v${m.version} with SHA-256 ${m.sha256.slice(0, 12)}…, not the delta's base`
      : null) ??
    chainProblem(m);
  if (problem) throw new WeightsError(`refusing the stored manifest of v${version}: ${problem}`);
  return m;
}

/**
 * The full blob `manifest` describes, verified (every tensor's and the whole blob's SHA-256):
 * downloaded when full; for a delta, applied on `held` when that is its base, else on its base
 * rebuilt from the stored chain (module comment). `manifest` itself must already have passed
 * `checkManifest`. WeightsError for an unusable chain, ObjectIntegrityError for a blob that does
 * not match its manifest.
 */
export async function fetchVersionBlob(
  bus: Bus,
  manifest: WeightsManifest,
  held: HeldWeights | null,
  verifier?: WeightsVerifier,
): Promise<Uint8Array> {
  // Walk back to the first version whose base the replica holds, or to the chain's full version.
  const chain: WeightsManifest[] = [manifest];
  let start: Uint8Array | null = null;
  for (;;) {
    const m = chain[chain.length - 1] as WeightsManifest;
    if (m.baseVersion === 0n) break;
    if (held?.blob && held.version === Number(m.baseVersion) && held.sha256 === m.baseSha256) {
      start = held.blob;
      break;
    }
    if (chain.length > MAX_DELTA_CHAIN) {
      throw new WeightsError(
        `v${manifest.version}: its delta chain is longer than ${MAX_DELTA_CHAIN} versions`,
      );
    }
    chain.push(await baseManifest(bus, m, verifier));
  }
  if (start === null) {
    const full = chain.pop() as WeightsManifest;
    start = await fetchWeightsBlob(
      bus,
      full.objectName,
      full.sha256,
      full.tensors,
      Number(full.sizeBytes),
      full.headerSha256,
    );
  }
  let blob = start;
  for (const m of chain.reverse()) {
    const delta = await fetchExactly(bus, m.objectName, Number(m.blobSizeBytes));
    blob = applyDelta(blob, delta, {
      objectName: m.objectName,
      sha256: m.sha256,
      sizeBytes: Number(m.sizeBytes),
      tensors: m.tensors,
      headerSha256: m.headerSha256,
    });
  }
  return blob;
}
