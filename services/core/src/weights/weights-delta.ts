/**
 * Per-tensor delta versions: when only some tensors of a version differ from its parent's (a
 * LoRA run's A matrices before B moves, a skipped update, frozen layers), the publisher stores
 * only those, and a replica rebuilds the full blob from the weights it already serves.
 *
 * A delta blob is the full blob's bytes before its first tensor (the 8-byte length and the JSON
 * header, byte for byte) followed by the bytes of the tensors its manifest does not mark
 * `unchanged`, in header order. It is not a valid safetensors file on its own (the header's
 * offsets are the full blob's); its manifest still lists every tensor of the FULL blob with its
 * SHA-256, and the full blob's size and SHA-256, so the rebuilt blob goes through the same
 * {@link VerifyingAssembler} as a full download: a replica verifies what it ends up serving, not
 * what travelled.
 */
import { create } from "@bufbuild/protobuf";
import { type WeightsTensor, WeightsTensorSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import { ObjectIntegrityError } from "../errors.js";
import { type Entry, parseHeader } from "../model/safetensors.js";
import { safetensorsHeaderLength } from "./weights-manifest.js";
import {
  type BlobDigest,
  blobChunks,
  entriesOf,
  MAX_BLOB_BYTES,
  VerifyingAssembler,
} from "./weights-stream.js";

/** A delta the publisher can store instead of the full blob. */
export interface DeltaPlan {
  /** Every tensor of the full blob, those equal to the parent's marked `unchanged`. */
  tensors: WeightsTensor[];
  /** Bytes of the delta blob (header plus changed tensors). */
  sizeBytes: number;
  /** The delta blob as views of the full blob's own memory (nothing copied). */
  chunks(): Generator<Uint8Array>;
}

/** Whether two tensor records describe the same bytes (name, dtype, shape, SHA-256). */
function sameTensor(a: WeightsTensor, b: WeightsTensor | undefined): boolean {
  return (
    b !== undefined &&
    a.name === b.name &&
    a.dtype === b.dtype &&
    a.sha256 === b.sha256 &&
    a.shape.join(",") === b.shape.join(",")
  );
}

/**
 * The delta of `blob` (digested as `digest`) on a parent whose tensors were `parent` (by name),
 * or null when a delta would not be smaller than the full blob (every tensor changed, the blob is
 * not safetensors, or its tensors leave gaps a rebuild could not reproduce).
 */
export function planDelta(
  blob: Uint8Array,
  digest: BlobDigest,
  parent: ReadonlyMap<string, WeightsTensor>,
): DeltaPlan | null {
  const { entries } = digest;
  const first = entries[0];
  if (first === undefined) return null;
  // The rebuild writes the header, then each tensor right after the last: the blob must be laid
  // out exactly so (the project's encoder always is).
  let at = first.begin;
  for (const e of entries) {
    if (e.begin !== at) return null;
    at = e.end;
  }
  if (at !== blob.length) return null;
  const tensors = digest.tensors.map((t) =>
    create(WeightsTensorSchema, { ...t, unchanged: sameTensor(t, parent.get(t.name)) }),
  );
  const changed = entries.filter((_, i) => !(tensors[i] as WeightsTensor).unchanged);
  const sizeBytes = first.begin + changed.reduce((s, e) => s + (e.end - e.begin), 0);
  if (sizeBytes >= blob.length) return null;
  return {
    tensors,
    sizeBytes,
    *chunks() {
      yield* blobChunks(blob.subarray(0, first.begin));
      for (const e of changed) yield* blobChunks(blob.subarray(e.begin, e.end));
    },
  };
}

/** What a replica knows of a delta version: its manifest's promises about the full blob. */
export interface DeltaExpectation {
  /** Object Store name of the delta blob (for error messages). */
  objectName: string;
  /** SHA-256 and size of the FULL blob the delta rebuilds. */
  sha256: string;
  sizeBytes: number;
  /** Every tensor of the full blob, unchanged ones marked. */
  tensors: readonly WeightsTensor[];
  /** The manifest's `headerSha256` of the full blob ("" or absent: check the whole SHA-256). */
  headerSha256?: string;
}

/**
 * The full blob of a delta version: `delta`'s header and changed tensors, the other tensors'
 * bytes taken from `parentBlob` (the base version's full blob, held by the caller), assembled
 * and verified like a download (header against the manifest's tensor list, every tensor's
 * SHA-256, the size and the whole SHA-256). ObjectIntegrityError naming the object and the
 * tensor when anything does not match: a tampered delta, or a parent that is not its base.
 */
export function applyDelta(parentBlob: Uint8Array, delta: Uint8Array, expect: DeltaExpectation): Uint8Array {
  const fail: (why: string) => never = (why) => {
    throw new ObjectIntegrityError(`weights ${expect.objectName}: ${why}`);
  };
  if (expect.sizeBytes > MAX_BLOB_BYTES)
    fail(`the manifest's size of ${expect.sizeBytes} bytes is too large`);
  if (delta.length < 10) fail("is too short for a delta (no header)");
  const n = safetensorsHeaderLength(delta);
  if (n < 2 || 8 + n > delta.length) fail("does not start with a safetensors header");
  let entries: Entry[];
  try {
    const json = new TextDecoder().decode(delta.subarray(8, 8 + n));
    entries = parseHeader(expect.objectName, json, 8 + n, expect.sizeBytes).entries;
  } catch (err) {
    throw new ObjectIntegrityError(`weights ${expect.objectName}: ${(err as Error).message}`, { cause: err });
  }
  const promised = new Map(expect.tensors.map((t) => [t.name, t]));
  const parent = new Map(entriesOf(parentBlob, "the served weights").map((e) => [e.name, e]));
  const prefix = entries[0]?.begin ?? 8 + n;
  // The assembler checks the header against the manifest, each tensor as it completes, and the
  // whole blob at the end; this loop only places the bytes.
  const out = new VerifyingAssembler({
    objectName: expect.objectName,
    sha256: expect.sha256,
    sizeBytes: expect.sizeBytes,
    tensors: expect.tensors,
    headerSha256: expect.headerSha256 ?? "",
  });
  out.push(delta.subarray(0, prefix));
  let at = prefix;
  for (const e of entries) {
    const size = e.end - e.begin;
    if (promised.get(e.name)?.unchanged) {
      const p = parent.get(e.name);
      if (p === undefined || p.end - p.begin !== size) {
        fail(`tensor '${e.name}' is marked unchanged, but the served weights have no such tensor`);
      }
      out.push(parentBlob.subarray(p.begin, p.end));
    } else {
      if (at + size > delta.length) fail(`ends before the bytes of tensor '${e.name}'`);
      out.push(delta.subarray(at, at + size));
      at += size;
    }
  }
  if (at !== delta.length) fail(`holds ${delta.length - at} bytes after its last changed tensor`);
  return out.finish();
}
