/**
 * Weights blobs as streams of chunks, both ways, so neither end holds the model twice.
 *
 * Publisher: {@link digestBlob} hashes the blob once (each slice feeds the whole-blob SHA-256 and
 * its tensor's SHA-256 together), and {@link blobChunks} hands the Object Store put views of the
 * blob's own memory (never a copy, never a second whole blob).
 *
 * Replica: a {@link VerifyingAssembler} takes the chunks of an Object Store get as they arrive,
 * writes each into one buffer of the manifest's size (no list of chunks concatenated at the end),
 * and hashes them on the way in: the header is checked against the manifest's tensor list as
 * soon as it is complete, and each tensor as soon as its last byte is in, so a tampered chunk is
 * refused naming its tensor without reading the rest. When the manifest carries the header's
 * digest (`headerSha256`: the tensors fill the blob after the header, no gap), the header and
 * the tensors' digests cover every byte exactly once, and the assembler hashes each byte once
 * instead of also re-hashing the whole blob (the fixed cost measured in docs/weights-latency.md).
 */
import { createHash, type Hash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type WeightsTensor, WeightsTensorSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import { ObjectIntegrityError } from "../errors.js";
import { type Entry, parseHeader } from "../model/safetensors.js";
import { looksLikeSafetensors, safetensorsHeaderLength } from "./weights-manifest.js";

/**
 * The JetStream Object Store's own chunk size (128 KiB): the slice size of the digest pass (each
 * slice feeds two hashes while it is in cache) and the default size of {@link blobChunks}.
 */
export const WEIGHTS_CHUNK_BYTES = 128 * 1024;

/**
 * Largest view of a full blob handed to one Object Store put. The NATS client cuts its own
 * 128 KiB chunks out of each view without copying, but joins (copies) the buffered remainder with
 * every new view; views of {@link WEIGHTS_CHUNK_BYTES} made it copy each byte twice (measured:
 * +55 ms on a 50 MB put, docs/weights-latency.md). A blob of up to 16 MiB goes as one view, a
 * larger one with one join per 16 MiB; either way no view is a copy of the caller's blob.
 */
export const WEIGHTS_PUT_VIEW_BYTES = 16 * 1024 * 1024;

/** Largest blob a replica assembles: Node's largest typed array (a bigger manifest is refused). */
export const MAX_BLOB_BYTES = 2 ** 32;

/**
 * The tensor entries of safetensors bytes (name, dtype, shape, byte range), in byte order ([]
 * when the blob is not safetensors): where a delta finds the parent's bytes of a tensor.
 */
export function entriesOf(blob: Uint8Array, where: string): Entry[] {
  if (!looksLikeSafetensors(blob)) return [];
  const n = safetensorsHeaderLength(blob);
  const json = new TextDecoder().decode(blob.subarray(8, 8 + n));
  return parseHeader(where, json, 8 + n, blob.length).entries;
}

/** The whole-blob and per-tensor digests of a blob, from one pass over its bytes. */
export interface BlobDigest {
  /**
   * Lower-case hex SHA-256 of the whole blob; "" when the caller asked for the tensors' digests
   * only (`whole: false`) and the header's and tensors' digests cover every byte.
   */
  sha256: string;
  /**
   * SHA-256 of the bytes before the first tensor when the tensors fill the rest of the blob with
   * no gap ({@link gaplessHeaderEnd}); "" otherwise (the whole-blob digest must then be checked).
   */
  headerSha256: string;
  /** Every tensor (name, shape, dtype, SHA-256), in byte order; [] when the blob is not safetensors. */
  tensors: WeightsTensor[];
  /** The same tensors' byte ranges in the blob, in the same order (what a delta streams). */
  entries: Entry[];
}

/**
 * SHA-256 of `blob` and of each of its tensors in one pass: every slice of a tensor updates both
 * hashes while it is in cache, instead of reading the blob once per digest. With `whole: false`
 * the whole-blob hash is skipped when the header's and tensors' digests cover every byte (the
 * publisher then takes it from the Object Store put, which computes it anyway): one hash per byte
 * instead of two. A blob that looks like safetensors but has a broken header throws
 * CheckpointError naming `where`.
 */
export function digestBlob(blob: Uint8Array, where = "weights blob", whole = true): BlobDigest {
  const tensors: WeightsTensor[] = [];
  const entries = entriesOf(blob, where);
  const headerEnd = gaplessHeaderEnd(entries, blob.length);
  const total = whole || headerEnd === 0 ? createHash("sha256") : null;
  let at = 0;
  for (const e of entries) {
    if (e.begin > at) total?.update(blob.subarray(at, e.begin));
    const own = createHash("sha256");
    for (let p = e.begin; p < e.end; p += WEIGHTS_CHUNK_BYTES) {
      const slice = blob.subarray(p, Math.min(e.end, p + WEIGHTS_CHUNK_BYTES));
      own.update(slice);
      total?.update(slice);
    }
    at = e.end;
    tensors.push(
      create(WeightsTensorSchema, {
        name: e.name,
        shape: e.shape.map(BigInt),
        dtype: e.dtype,
        sha256: own.digest("hex"),
      }),
    );
  }
  if (at < blob.length) total?.update(blob.subarray(at));
  const headerSha256 =
    headerEnd > 0 ? createHash("sha256").update(blob.subarray(0, headerEnd)).digest("hex") : "";
  return { sha256: total?.digest("hex") ?? "", headerSha256, tensors, entries };
}

/**
 * A name-safe id of a blob's content before its whole SHA-256 is known (that SHA-256 itself when
 * the digest has it): else the SHA-256 of its header digest and its tensors' digests in order.
 * Those fix every byte of a gapless blob (the header fixes each tensor's range, the tensors tile
 * the rest), so two blobs share the id only if they are byte-identical, which is all a weights
 * object's name needs (weights-publisher.ts).
 */
export function contentIdOf(digest: BlobDigest): string {
  if (digest.sha256 !== "") return digest.sha256;
  const h = createHash("sha256").update(digest.headerSha256);
  for (const t of digest.tensors) h.update(`\n${t.name}\n${t.sha256}`);
  return h.digest("hex");
}

/**
 * Where the header ends when the tensors (`entries`, in byte order) tile the rest of a blob of
 * `size` bytes exactly, with no gap between or after them; 0 when they do not (or there are
 * none). Only then do the header's and the tensors' digests together cover every byte.
 */
export function gaplessHeaderEnd(entries: readonly Entry[], size: number): number {
  const first = entries[0];
  if (first === undefined) return 0;
  let at = first.begin;
  for (const e of entries) {
    if (e.begin !== at) return 0;
    at = e.end;
  }
  return at === size ? first.begin : 0;
}

/**
 * Views of `blob` of at most `chunkBytes` each, in order: what the publisher streams into the
 * Object Store. Each is a `subarray` of the caller's buffer, so streaming copies nothing.
 */
export function* blobChunks(blob: Uint8Array, chunkBytes = WEIGHTS_CHUNK_BYTES): Generator<Uint8Array> {
  for (let p = 0; p < blob.length; p += chunkBytes)
    yield blob.subarray(p, Math.min(blob.length, p + chunkBytes));
}

/** What a replica expects of a weights object: its manifest's promises. */
export interface ExpectedBlob {
  objectName: string;
  sha256: string;
  /** Size the manifest promises; 0 (unknown) grows the buffer as chunks arrive. */
  sizeBytes: number;
  tensors: readonly WeightsTensor[];
  /** The manifest's `headerSha256` ("" or absent: verify the whole blob's SHA-256 as well). */
  headerSha256?: string;
}

/**
 * Builds a blob from streamed chunks into one buffer and checks it against its manifest on the
 * way: header against the tensor list, each tensor's SHA-256 when its last byte arrives, the
 * size and the whole blob's SHA-256 at {@link finish}. Every failure is an ObjectIntegrityError
 * naming the object (and the tensor). With a header digest (and a known size and tensor list)
 * the header's digest replaces the whole-blob one: each byte is hashed once.
 */
export class VerifyingAssembler {
  private buf: Uint8Array;
  private length = 0;
  /** The whole-blob hash; null when the header's and tensors' digests cover every byte. */
  private readonly total: Hash | null;
  /** Tensors of the parsed header still to check, in byte order; null until the header is in. */
  private pending: Entry[] | null = null;
  private current: { entry: Entry; hash: Hash } | null = null;
  private readonly promised: Map<string, WeightsTensor>;

  constructor(private readonly expect: ExpectedBlob) {
    if (expect.sizeBytes > MAX_BLOB_BYTES) {
      this.fail(`the manifest's size of ${expect.sizeBytes} bytes is more than a replica can hold`);
    }
    this.buf = new Uint8Array(expect.sizeBytes > 0 ? expect.sizeBytes : WEIGHTS_CHUNK_BYTES);
    this.promised = new Map(expect.tensors.map((t) => [t.name, t]));
    const onePass = (expect.headerSha256 ?? "") !== "" && expect.tensors.length > 0 && expect.sizeBytes > 0;
    this.total = onePass ? null : createHash("sha256");
  }

  private fail(why: string): never {
    throw new ObjectIntegrityError(`weights ${this.expect.objectName}: ${why}`);
  }

  /** Bytes received so far. */
  get received(): number {
    return this.length;
  }

  /** Take the next chunk (copied into the blob's buffer; the chunk itself is not kept). */
  push(chunk: Uint8Array): void {
    const end = this.length + chunk.length;
    if (end > this.buf.length) {
      if (this.expect.sizeBytes > 0)
        this.fail(`holds more than the manifest's ${this.expect.sizeBytes} bytes`);
      const grown = new Uint8Array(Math.max(end, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    this.buf.set(chunk, this.length);
    const start = this.length;
    this.length = end;
    this.total?.update(chunk);
    if (this.expect.tensors.length === 0) return;
    if (this.pending === null) this.readHeader();
    this.hashTensors(start);
  }

  /** Once the header is complete: its tensors, checked against the manifest's (names, dtypes, shapes). */
  private readHeader(): void {
    if (this.length < 8) return;
    const n = safetensorsHeaderLength(this.buf);
    const size = this.expect.sizeBytes;
    if (n < 2 || (size > 0 && 8 + n > size))
      this.fail("is not a safetensors blob, but the manifest lists its tensors");
    if (this.length < 8 + n) return;
    let entries: Entry[];
    try {
      const json = new TextDecoder().decode(this.buf.subarray(8, 8 + n));
      entries = parseHeader(
        this.expect.objectName,
        json,
        8 + n,
        size > 0 ? size : Number.MAX_SAFE_INTEGER,
      ).entries;
    } catch (err) {
      throw new ObjectIntegrityError(`weights ${this.expect.objectName}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const left = new Map(this.promised);
    for (const e of entries) {
      const want = left.get(e.name);
      if (!want) this.fail(`tensor '${e.name}' is not in the manifest`);
      if (want.dtype !== e.dtype || want.shape.join(",") !== e.shape.join(",")) {
        this.fail(
          `tensor '${e.name}' is ${e.dtype} [${e.shape}], the manifest says ${want.dtype} [${want.shape}]`,
        );
      }
      left.delete(e.name);
    }
    const missing = [...left.keys()];
    if (missing.length > 0) this.fail(`tensor '${missing[0]}' of the manifest is missing from the blob`);
    if (this.total === null) this.checkHeaderDigest(8 + n, entries);
    this.pending = entries;
  }

  /**
   * One-pass mode: the header bytes must have the manifest's digest (which also fixes every
   * tensor's byte range) and the tensors must fill the rest of the blob, so that the tensors'
   * digests cover every other byte. Checked before any tensor is hashed.
   */
  private checkHeaderDigest(headerEnd: number, entries: readonly Entry[]): void {
    const got = createHash("sha256").update(this.buf.subarray(0, headerEnd)).digest("hex");
    if (got !== this.expect.headerSha256)
      this.fail(`header has SHA-256 ${got}, the manifest says ${this.expect.headerSha256} (tampered)`);
    if (gaplessHeaderEnd(entries, this.expect.sizeBytes) !== headerEnd)
      this.fail("leaves bytes outside its tensors, but the manifest's digests cover none there");
  }

  /** Feed the bytes from `from` on to the tensors they belong to; check each tensor that completes. */
  private hashTensors(from: number): void {
    const pending = this.pending;
    if (pending === null) return;
    let p = from;
    while (p < this.length) {
      if (this.current === null) {
        const next = pending[0];
        if (next === undefined) return;
        if (next.begin >= this.length) return;
        pending.shift();
        this.current = { entry: next, hash: createHash("sha256") };
        p = Math.max(p, next.begin);
      }
      const { entry, hash } = this.current;
      const stop = Math.min(entry.end, this.length);
      if (stop > p) hash.update(this.buf.subarray(p, stop));
      p = stop;
      if (stop < entry.end) return;
      const got = hash.digest("hex");
      const want = (this.promised.get(entry.name) as WeightsTensor).sha256;
      if (got !== want)
        this.fail(`tensor '${entry.name}' has SHA-256 ${got}, the manifest says ${want} (tampered)`);
      this.current = null;
    }
  }

  /** The whole blob, once its size and SHA-256 are what the manifest promised. */
  finish(): Uint8Array {
    const size = this.expect.sizeBytes;
    if (size > 0 && this.length !== size) this.fail(`holds ${this.length} bytes, the manifest says ${size}`);
    if (
      this.expect.tensors.length > 0 &&
      (this.pending === null || this.pending.length > 0 || this.current)
    ) {
      this.fail("ended before its last tensor");
    }
    // One-pass mode: every byte was already checked (header, then each tensor, no gap).
    const actual = this.total?.digest("hex") ?? this.expect.sha256;
    if (actual !== this.expect.sha256) {
      this.fail(`SHA-256 ${actual} does not match the manifest's ${this.expect.sha256}`);
    }
    return this.length === this.buf.length ? this.buf : this.buf.subarray(0, this.length);
  }
}
