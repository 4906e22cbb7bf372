/**
 * What a weights manifest promises about its place in the version log, and the checks both ends
 * apply: the version bounds (so a pointer set to an absurd number is refused, never
 * half-trusted) and the parent chain. The per-tensor digests are built and checked as the blob
 * streams (weights-stream.ts).
 */

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
 * The JSON header's byte length that safetensors bytes begin with (little-endian u64), read from
 * the first 8 bytes of `bytes` (the caller checks there are 8). One reader for the publisher's
 * digests, the replica's streaming check and {@link looksLikeSafetensors}.
 */
export function safetensorsHeaderLength(bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset, LENGTH_BYTES).getBigUint64(0, true));
}

/**
 * Whether `blob` is laid out as safetensors (a plausible header length followed by a JSON
 * object). The project's own blobs always are; tests publish plain bytes, which carry no
 * per-tensor digests.
 */
export function looksLikeSafetensors(blob: Uint8Array): boolean {
  if (blob.length < LENGTH_BYTES + 2) return false;
  const n = safetensorsHeaderLength(blob);
  return n >= 2 && LENGTH_BYTES + n <= blob.length && blob[LENGTH_BYTES] === 0x7b; // "{"
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
  /** Delta fields (0 / "" for a full version). */
  baseVersion: bigint;
  baseSha256: string;
  fullVersion: bigint;
  tensors: readonly { unchanged: boolean }[];
}

/**
 * Most versions a replica walks back from a delta to its full version (the `weightsFullEvery`
 * setting's own maximum), so a signed but absurd chain cannot make it read without end.
 */
export const MAX_DELTA_CHAIN = 1000;

/**
 * Why a manifest's place in the log is inconsistent, or null: its parent must be older than it,
 * and its run's reference must be no newer than it (the reference is a run's first version). A
 * delta must be on its parent, name the base's SHA-256, and start from a full version no more
 * than {@link MAX_DELTA_CHAIN} back; a full version marks no tensor unchanged.
 */
export function chainProblem(m: ChainFields): string | null {
  if (m.parentVersion >= m.version) {
    return `parent version ${m.parentVersion} is not older than version ${m.version}`;
  }
  if (m.referenceVersion > m.version) {
    return `reference version ${m.referenceVersion} is newer than version ${m.version}`;
  }
  if (m.baseVersion === 0n) {
    if (m.tensors.some((t) => t.unchanged)) return "a full version marks tensors unchanged";
    return null;
  }
  // A delta: on its parent, with the base's digest, after a full version not too far back.
  if (m.baseVersion !== m.parentVersion) {
    return `delta base version ${m.baseVersion} is not its parent version ${m.parentVersion}`;
  }
  if (!/^[0-9a-f]{64}$/.test(m.baseSha256)) return "delta base SHA-256 is not 64 lower-case hex digits";
  if (m.fullVersion < 1n || m.fullVersion > m.baseVersion) {
    return `full version ${m.fullVersion} is not in 1..${m.baseVersion} (its delta base)`;
  }
  if (m.version - m.fullVersion > BigInt(MAX_DELTA_CHAIN)) {
    return `its delta chain back to v${m.fullVersion} is longer than ${MAX_DELTA_CHAIN} versions`;
  }
  return null;
}
