/**
 * Streamed weights blobs: the publisher hashes once and hands the Object Store views of the
 * blob's own memory in chunks (never a copy, never the whole blob in one piece), and a replica
 * checks each tensor as its chunks arrive, refusing a tampered chunk by the tensor's name before
 * reading the rest.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { ChunkSource, ObjectInfo } from "../services/core/src/bus/bus.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { ObjectIntegrityError } from "../services/core/src/errors.js";
import { encodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import { fetchWeightsBlob, publishWeights } from "../services/core/src/weights/weights-channel.js";
import {
  blobChunks,
  digestBlob,
  VerifyingAssembler,
  WEIGHTS_CHUNK_BYTES,
  WEIGHTS_PUT_VIEW_BYTES,
} from "../services/core/src/weights/weights-stream.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A blob of three F32 tensors, the middle one spanning several chunks. */
function blob(seed: number): Uint8Array {
  const t = (n: number, k: number) => ({
    shape: [n],
    data: Float32Array.from({ length: n }, (_, i) => i * k + seed),
  });
  return encodeSafetensors(
    new Map([
      ["a.weight", t(100, 1)],
      ["b.weight", t(100_000, 2)],
      ["c.bias", t(10, 3)],
    ]),
    { format: "test" },
  );
}

describe("weights stream - publisher", () => {
  it("weights stream - one pass gives the whole-blob and every tensor's SHA-256", () => {
    const b = blob(1);
    const d = digestBlob(b);
    expect(d.sha256).toBe(sha256(b));
    expect(d.tensors.map((t) => t.name)).toEqual(["a.weight", "b.weight", "c.bias"]);
    const end = b.length;
    expect(d.tensors[2]?.sha256).toBe(sha256(b.subarray(end - 40)));
    expect(d.tensors[1]?.sha256).toBe(sha256(b.subarray(end - 40 - 400_000, end - 40)));
  });

  it("weights stream - the put is streamed as views of the caller's blob, never a copy", async () => {
    const bus = new MemoryBus();
    const store = await bus.objects();
    const seen: Uint8Array[] = [];
    const put = store.put.bind(store);
    // The publisher must use the streamed put; a whole-blob put fails the test.
    store.put = async (): Promise<ObjectInfo> => {
      throw new Error("the publisher called the whole-blob put");
    };
    const putStream = store.putStream.bind(store);
    store.putStream = async (name: string, source: ChunkSource) => {
      for await (const c of source()) seen.push(c);
      return putStream(name, source);
    };
    const b = blob(2);
    const m = await publishWeights(bus, { blob: b, runId: "r", step: 1, modelKind: "test" });
    expect(seen.length).toBe(Math.ceil(b.length / WEIGHTS_PUT_VIEW_BYTES));
    expect(seen.every((c) => c.buffer === b.buffer && c.length <= WEIGHTS_PUT_VIEW_BYTES)).toBe(true);
    expect(seen.reduce((n, c) => n + c.length, 0)).toBe(b.length);
    store.put = put;
    const back = await fetchWeightsBlob(bus, m.objectName, m.sha256, m.tensors, Number(m.sizeBytes));
    expect(Buffer.compare(back, b)).toBe(0);
  });
});

describe("weights stream - replica", () => {
  const expectOf = (b: Uint8Array, objectName = "w") => {
    const d = digestBlob(b);
    return { objectName, sha256: d.sha256, sizeBytes: b.length, tensors: d.tensors };
  };

  it("weights stream - chunks of any size assemble into one buffer of the manifest's size", () => {
    const b = blob(3);
    for (const size of [1000, 4096, WEIGHTS_CHUNK_BYTES, b.length]) {
      const a = new VerifyingAssembler(expectOf(b));
      for (const c of blobChunks(b, size)) a.push(c);
      const out = a.finish();
      expect(Buffer.compare(out, b)).toBe(0);
      expect(out.buffer.byteLength).toBe(b.length);
    }
  });

  it("weights stream - a tampered chunk is refused naming its tensor as soon as that tensor is in", () => {
    const b = blob(4);
    const headerEnd = b.length - 40 - 400_000 - 400;
    for (const [at, name, readAtMost] of [
      [headerEnd + 5, "a.weight", 1], // the first tensor: refused in the first chunk
      [headerEnd + 400 + 1234, "b.weight", 99], // the big one: refused at its last chunk
    ] as const) {
      const tampered = b.slice();
      tampered[at] = (tampered[at] as number) ^ 1;
      const a = new VerifyingAssembler(expectOf(b));
      let pushed = 0;
      expect(() => {
        for (const c of blobChunks(tampered, 4096)) {
          pushed++;
          a.push(c);
        }
      }).toThrow(
        new RegExp(
          `tensor '${name}' has SHA-256 [0-9a-f]{64}, the manifest says [0-9a-f]{64} \\(tampered\\)`,
        ),
      );
      expect(pushed).toBeLessThanOrEqual(readAtMost);
    }
  });

  it("weights stream - a header that differs from the manifest is refused before any tensor bytes", () => {
    const b = blob(5);
    const other = encodeSafetensors(new Map([["a.weight", { shape: [2], data: new Float32Array(2) }]]), {});
    const a = new VerifyingAssembler(expectOf(b));
    expect(() => a.push(other.subarray(0, other.length - 8))).toThrow(
      /tensor 'a\.weight' is F32 \[2\], the manifest says F32 \[100\]/,
    );
  });

  it("weights stream - more bytes than the manifest's size, or fewer, are refused", () => {
    const b = blob(6);
    const over = new VerifyingAssembler({ ...expectOf(b), sizeBytes: b.length - 1 });
    expect(() => over.push(b)).toThrow(/more than the manifest's/);
    const short = new VerifyingAssembler(expectOf(b));
    short.push(b.subarray(0, b.length - 1));
    expect(() => short.finish()).toThrow(ObjectIntegrityError);
  });

  it("weights stream - a blob replaced in the store under its name is refused by the streamed fetch", async () => {
    const bus = new MemoryBus();
    const m = await publishWeights(bus, { blob: blob(7), runId: "r", step: 1, modelKind: "test" });
    const replaced = blob(7);
    replaced[replaced.length - 1] = (replaced[replaced.length - 1] as number) ^ 1;
    await (await bus.objects()).put(m.objectName, replaced);
    await expect(
      fetchWeightsBlob(bus, m.objectName, m.sha256, m.tensors, Number(m.sizeBytes)),
    ).rejects.toThrow(/tensor 'c\.bias' has SHA-256/);
  });
});

/** Safetensors bytes whose two tensors leave an 8-byte gap between them (legal, but not tiled). */
function gappedBlob(): Uint8Array {
  const json = JSON.stringify({
    a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    b: { dtype: "F32", shape: [2], data_offsets: [16, 24] },
  });
  const header = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + header.length + 24);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  for (let i = 8 + header.length; i < out.length; i++) out[i] = i & 255;
  return out;
}

describe("weights stream - one hashing pass", () => {
  const onePass = (b: Uint8Array) => {
    const d = digestBlob(b);
    return {
      objectName: "w",
      sha256: d.sha256,
      sizeBytes: b.length,
      tensors: d.tensors,
      headerSha256: d.headerSha256,
    };
  };

  it("weights stream - a gapless blob's digest holds its header's SHA-256; a blob with a gap gets none", () => {
    const b = blob(8);
    const headerEnd = b.length - 40 - 400_000 - 400;
    expect(digestBlob(b).headerSha256).toBe(sha256(b.subarray(0, headerEnd)));
    expect(digestBlob(gappedBlob()).headerSha256).toBe("");
    // Asked for the tensors' digests only: skipped for the gapless blob, still made for the other.
    expect(digestBlob(b, "t", false).sha256).toBe("");
    expect(digestBlob(gappedBlob(), "t", false).sha256).toBe(sha256(gappedBlob()));
    expect(digestBlob(new TextEncoder().encode("plain bytes")).headerSha256).toBe("");
  });

  it("weights stream - a published manifest carries the header digest, and the fetch verifies with it", async () => {
    const bus = new MemoryBus();
    const b = blob(9);
    const m = await publishWeights(bus, { blob: b, runId: "r", step: 1, modelKind: "test" });
    expect(m.headerSha256).toBe(digestBlob(b).headerSha256);
    const back = await fetchWeightsBlob(
      bus,
      m.objectName,
      m.sha256,
      m.tensors,
      Number(m.sizeBytes),
      m.headerSha256,
    );
    expect(Buffer.compare(back, b)).toBe(0);
  });

  it("weights stream - a header byte changed with every tensor intact is refused at the header", async () => {
    const bus = new MemoryBus();
    const b = blob(10);
    const m = await publishWeights(bus, { blob: b, runId: "r", step: 1, modelKind: "test" });
    // Same length, same tensor list: only the metadata differs, which no tensor digest covers.
    const text = new TextDecoder().decode(b);
    const at = text.indexOf('"test"') + 1;
    expect(at).toBeGreaterThan(0);
    const replaced = b.slice();
    replaced[at] = "b".charCodeAt(0);
    await (await bus.objects()).put(m.objectName, replaced);
    await expect(
      fetchWeightsBlob(bus, m.objectName, m.sha256, m.tensors, Number(m.sizeBytes), m.headerSha256),
    ).rejects.toThrow(/header has SHA-256 [0-9a-f]{64}, the manifest says [0-9a-f]{64} \(tampered\)/);
  });

  it("weights stream - a manifest whose header digest is not the blob's is refused before any tensor", () => {
    const b = blob(11);
    const a = new VerifyingAssembler({ ...onePass(b), headerSha256: sha256(new Uint8Array(1)) });
    expect(() => a.push(b.subarray(0, 4096))).toThrow(/header has SHA-256 .* \(tampered\)/);
  });

  it("weights stream - a header digest over a blob with gaps is refused: the gap bytes would go unchecked", () => {
    const g = gappedBlob();
    const n = Number(new DataView(g.buffer).getBigUint64(0, true));
    const a = new VerifyingAssembler({ ...onePass(g), headerSha256: sha256(g.subarray(0, 8 + n)) });
    expect(() => a.push(g)).toThrow(/leaves bytes outside its tensors/);
  });

  it("weights stream - without a header digest a changed gap byte is still caught by the whole-blob SHA-256", () => {
    const g = gappedBlob();
    const tampered = g.slice();
    const gapAt = g.length - 24 + 8 + 3; // inside the 8 bytes between the two tensors
    tampered[gapAt] = (tampered[gapAt] as number) ^ 1;
    const a = new VerifyingAssembler(onePass(g));
    a.push(tampered);
    expect(() => a.finish()).toThrow(/SHA-256 [0-9a-f]{64} does not match the manifest's/);
  });
});
