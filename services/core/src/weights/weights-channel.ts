/**
 * How weights travel from the Optimizer to the Policy replicas: blobs in the Object Store, and a
 * signed `WeightsManifest` under the latest-version KV key, moved by compare-and-set
 * (weights-publisher.ts). This module is the replicas' side: read the pointer, watch it, fetch a
 * blob bound to its manifest by SHA-256 (the whole blob and each tensor), check a manifest before
 * taking it.
 *
 * The Optimizer is the only writer; replicas only read. Compare-and-set makes versions strictly
 * increasing even if two Optimizers race (one of them retries with the next number); the
 * signature (weights-signing.ts) lets a replica refuse a manifest the Optimizer did not write.
 */
import type { WeightsManifest } from "../../gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../bus/bus.js";
import { LATEST_WEIGHTS_KEY } from "../bus/subjects.js";
import { WeightsError } from "../errors.js";
import { chainProblem, versionProblem } from "./weights-manifest.js";
import { decodeManifest } from "./weights-pointer.js";
import { signatureProblem, type WeightsVerifier } from "./weights-signing.js";
import { VerifyingAssembler } from "./weights-stream.js";

export { readLatestWeights } from "./weights-pointer.js";
export { type PublishWeightsInput, publishWeights, WeightsPublisher } from "./weights-publisher.js";

/**
 * Stream a blob from the Object Store and check it against the digests the manifest promised
 * as the chunks arrive (weights-stream.ts): the header against the tensor list, each tensor's
 * SHA-256 once its last byte is in (so a tampered blob is refused naming the tensor, before the
 * rest is read), then the size and the whole blob's SHA-256. The chunks go straight into one
 * buffer of `sizeBytes` (0: unknown, grown as needed), never held twice. The bus verifies its own
 * digest too; these checks bind the blob to the (signed) manifest, so a blob replaced under the
 * same name (with a fresh store digest) is still refused. With the manifest's `headerSha256` the
 * header's digest stands in for the whole blob's (every byte is still checked, hashed once).
 */
export async function fetchWeightsBlob(
  bus: Bus,
  objectName: string,
  sha256: string,
  tensors: WeightsManifest["tensors"] = [],
  sizeBytes = 0,
  headerSha256 = "",
): Promise<Uint8Array> {
  const assembler = new VerifyingAssembler({ objectName, sha256, sizeBytes, tensors, headerSha256 });
  for await (const chunk of (await bus.objects()).getStream(objectName)) assembler.push(chunk);
  return assembler.finish();
}

/**
 * Throws WeightsError saying why a replica serving version `served` must not take `manifest`:
 * with `verifier`, not signed by that key (unsigned, another key, a bad signature); always, a
 * version that is not a safe integer, not newer than `served` or absurdly far ahead of it
 * (weights-manifest.ts), or a parent chain that does not hold.
 */
export function checkManifest(manifest: WeightsManifest, served: number, verifier?: WeightsVerifier): void {
  const problem =
    (verifier ? signatureProblem(manifest, verifier) : null) ??
    versionProblem(manifest.version, served) ??
    chainProblem(manifest);
  if (problem) throw new WeightsError(`refusing weights v${manifest.version}: ${problem}`);
}

/**
 * The blobs a replica reads after seeing the latest-weights entry `value`: the weights and the
 * run's reference weights. Lets a bridge send them along with the entry (bus/port-bus.ts); no
 * names for bytes that are no manifest.
 */
export function manifestObjectNames(value: Uint8Array): string[] {
  let m: WeightsManifest;
  try {
    m = decodeManifest(value);
  } catch {
    return [];
  }
  return [m.objectName, m.referenceObjectName].filter((n) => n !== "");
}

/**
 * Call `onManifest` with the current manifest (if any) and every later one, in order. Pointer
 * bytes that are no manifest go to `onUndecodable` (default: dropped), so a garbage write
 * never stops the watch.
 */
export async function watchLatestWeights(
  bus: Bus,
  onManifest: (manifest: WeightsManifest) => void,
  onUndecodable: (err: WeightsError) => void = () => {},
): Promise<() => void> {
  return (await bus.kv()).watch(LATEST_WEIGHTS_KEY, (entry) => {
    let manifest: WeightsManifest;
    try {
      manifest = decodeManifest(entry.value);
    } catch (err) {
      onUndecodable(err as WeightsError);
      return;
    }
    onManifest(manifest);
  });
}
