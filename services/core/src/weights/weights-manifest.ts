/**
 * What a weights manifest promises about its blob and its place in the version log, and the
 * checks both ends apply: the Optimizer builds per-tensor digests from the blob's safetensors
 * header, replicas check those digests (so a tampered blob is refused naming the tensor), the
 * version bounds (so a pointer set to an absurd number is refused, never half-trusted) and the
 * parent chain.
 */
import { create } from "@bufbuild/protobuf";
import { type WeightsTensor, WeightsTensorSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import { ObjectIntegrityError } from "../errors.js";
import { sha256Hex } from "../hash.js";
import { parseHeader } from "../model/safetensors.js";

/**
 * Highest version a replica or the Optimizer takes from a pointer: 2^53 − 1 (JavaScript's safe
 * integers), since a version is compared and incremented as a Number. A uint64 above it (an
 * attacker's 2^53 + 10) would round and make every later increment a no-op.
 */
export const MAX_WEIGHTS_VERSION = Number.MAX_SAFE_INTEGER;

/**
 * Largest step forward a replica takes from the version it serves: 1,000,000. An Optimizer
 * publishes at most one version per step and a run has at most 100,000 steps, so a bigger jump
 * is not a real log moving on; refusing it keeps an attacker (or a bug) from burning the
 * version space in one write. A replica that serves no bus version yet (just started) takes any
 * version up to {@link MAX_WEIGHTS_VERSION}: that is how it catches up.
 */
export const MAX_VERSION_JUMP = 1_000_000;

/** The safetensors header length prefix is 8 bytes; a blob shorter than that is not one. */
const LENGTH_BYTES = 8;

/**
 * Whether `blob` is laid out as safetensors (a plausible header length followed by a JSON
 * object). The project's own blobs always are; tests publish plain bytes, which carry no
 * per-tensor digests.
 */
export function looksLikeSafetensors(blob: Uint8Array): boolean {
  if (blob.length < LENGTH_BYTES + 2) return false;
  const n = Number(new DataView(blob.buffer, blob.byteOffset, 8).getBigUint64(0, true));
  return n >= 2 && LENGTH_BYTES + n <= blob.length && blob[LENGTH_BYTES] === 0x7b; // "{"
}

/** The tensors of safetensors bytes `blob` with each one's byte range; CheckpointError naming `where` on a defect. */
function tensorEntries(blob: Uint8Array, where: string) {
  const n = Number(new DataView(blob.buffer, blob.byteOffset, 8).getBigUint64(0, true));
  const json = new TextDecoder().decode(blob.subarray(LENGTH_BYTES, LENGTH_BYTES + n));
  return parseHeader(where, json, LENGTH_BYTES + n, blob.length).entries;
}

/**
 * Every tensor of `blob` (name, shape, dtype, SHA-256 of its bytes) in byte order, for the
 * manifest; [] when the blob is not safetensors. A blob that looks like safetensors but has a
 * broken header throws CheckpointError: publishing it would only fail on every replica.
 */
export function tensorDigests(blob: Uint8Array, where = "weights blob"): WeightsTensor[] {
  if (!looksLikeSafetensors(blob)) return [];
  return tensorEntries(blob, where).map((e) =>
    create(WeightsTensorSchema, {
      name: e.name,
      shape: e.shape.map(BigInt),
      dtype: e.dtype,
      sha256: sha256Hex(blob.subarray(e.begin, e.end)),
    }),
  );
}

/**
 * Throws ObjectIntegrityError naming the first tensor (in byte order) of `blob` that differs from
 * what `tensors` promised (bytes, shape, dtype, a tensor missing or added). No-op when the
 * manifest lists no tensors; the blob's total SHA-256 is checked apart.
 */
export function checkTensorDigests(
  blob: Uint8Array,
  tensors: readonly WeightsTensor[],
  objectName: string,
): void {
  if (tensors.length === 0) return;
  // Typed explicitly, so the compiler knows each call ends the function.
  const fail: (why: string) => never = (why) => {
    throw new ObjectIntegrityError(`weights ${objectName}: ${why}`);
  };
  let actual: WeightsTensor[];
  try {
    actual = looksLikeSafetensors(blob) ? tensorDigests(blob, objectName) : [];
  } catch (err) {
    throw new ObjectIntegrityError(`weights ${objectName}: ${(err as Error).message}`, { cause: err });
  }
  if (actual.length === 0) fail("is not a safetensors blob, but the manifest lists its tensors");
  const promised = new Map(tensors.map((t) => [t.name, t]));
  for (const t of actual) {
    const want = promised.get(t.name);
    if (!want) fail(`tensor '${t.name}' is not in the manifest`);
    if (want.dtype !== t.dtype || want.shape.join(",") !== t.shape.join(",")) {
      fail(`tensor '${t.name}' is ${t.dtype} [${t.shape}], the manifest says ${want.dtype} [${want.shape}]`);
    }
    if (want.sha256 !== t.sha256) {
      fail(`tensor '${t.name}' has SHA-256 ${t.sha256}, the manifest says ${want.sha256} (tampered)`);
    }
    promised.delete(t.name);
  }
  const missing = [...promised.keys()];
  if (missing.length > 0) fail(`tensor '${missing[0]}' of the manifest is missing from the blob`);
}

/**
 * Why a replica serving `served` must not take `version`, or null when it may: not a safe
 * integer, not newer than what it serves, or further ahead than {@link MAX_VERSION_JUMP}.
 */
export function versionProblem(version: bigint, served: number): string | null {
  if (version < 1n || version > BigInt(MAX_WEIGHTS_VERSION)) {
    return `version ${version} is not in 1..${MAX_WEIGHTS_VERSION}`;
  }
  const v = Number(version);
  if (v <= served) return `version ${v} is not newer than the served v${served}`;
  if (served > 0 && v - served > MAX_VERSION_JUMP) {
    return `version ${v} jumps ${v - served} past the served v${served} (at most ${MAX_VERSION_JUMP})`;
  }
  return null;
}

/** The parts of a manifest its chain check reads. */
export interface ChainFields {
  version: bigint;
  parentVersion: bigint;
  referenceVersion: bigint;
}

/**
 * Why a manifest's place in the log is inconsistent, or null: its parent must be older than it,
 * and its run's reference must be no newer than it (the reference is a run's first version).
 */
export function chainProblem(m: ChainFields): string | null {
  if (m.parentVersion >= m.version) {
    return `parent version ${m.parentVersion} is not older than version ${m.version}`;
  }
  if (m.referenceVersion > m.version) {
    return `reference version ${m.referenceVersion} is newer than version ${m.version}`;
  }
  return null;
}
