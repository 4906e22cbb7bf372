/**
 * Reading Hugging Face safetensors weights: one `model.safetensors` or the shards a
 * `model.safetensors.index.json` lists, with F32, F16 and BF16 tensors decoded to float32 (the
 * models compute in fp32 on CPU).
 *
 * Why a reader apart from checkpoint.ts: the project's own checkpoints are F32 only and carry
 * their config in `__metadata__`; a Hugging Face directory keeps the config in `config.json`,
 * stores half-precision weights and splits large models over several files. Files are read one
 * tensor at a time (`FileHandle.read` at an offset), never whole: a model of several GB would
 * exceed a Node Buffer. Every defect is a CheckpointError naming the file and the tensor.
 */
import { open, readFile, stat } from "node:fs/promises";
import { endianness } from "node:os";
import path from "node:path";
import { CheckpointError } from "../errors.js";
import type { WeightMap } from "./causal-lm.js";

/** The tensor dtypes this reader decodes (bytes per value in {@link DTYPE_BYTES}). */
export type FloatDtype = "F32" | "F16" | "BF16";

/** Bytes per value of each decoded dtype. */
export const DTYPE_BYTES: Readonly<Record<FloatDtype, number>> = { F32: 4, F16: 2, BF16: 2 };

/** File name of an unsharded Hugging Face weights file. */
export const SINGLE_FILE = "model.safetensors";
/** File name of the index of a sharded one (`weight_map`: tensor name → shard file). */
export const INDEX_FILE = "model.safetensors.index.json";

/** The weights of a directory, with the dtype each tensor had on disk (export writes it back). */
export interface SafetensorsWeights {
  /** Tensor name → shape and float32 values. */
  weights: WeightMap;
  /** Tensor name → its stored dtype. */
  dtypes: Map<string, FloatDtype>;
  /** The first file's `__metadata__` (Hugging Face writes `{format: "pt"}`). */
  metadata: Record<string, string>;
}

/** One tensor of a parsed header. */
export interface Entry {
  name: string;
  dtype: FloatDtype;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const LITTLE_ENDIAN_HOST = endianness() === "LE";

/** float32 value of every half-precision bit pattern (Node 20 has no Float16Array). */
let f16Table: Float32Array | null = null;

function halfTable(): Float32Array {
  if (f16Table !== null) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 31;
    const m = h & 1023;
    // subnormal m·2⁻²⁴; exponent 31 inf/NaN; else (1 + m/1024)·2^(e−15)
    if (e === 0) t[h] = sign * m * 2 ** -24;
    else if (e === 31) t[h] = m === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
    else t[h] = sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  f16Table = t;
  return t;
}

/**
 * float32 values of little-endian tensor bytes of `dtype` (a fresh array; `bytes` need not be
 * aligned). BF16 is the upper half of a float32, so it widens exactly; F16 goes through a table.
 */
export function decodeFloats(bytes: Uint8Array, dtype: FloatDtype): Float32Array {
  const n = bytes.length / DTYPE_BYTES[dtype];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "F32") {
    if (!LITTLE_ENDIAN_HOST) return Float32Array.from({ length: n }, (_, i) => view.getFloat32(i * 4, true));
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    return new Float32Array(copy.buffer);
  }
  const out = new Float32Array(n);
  if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
    return out;
  }
  const table = halfTable();
  for (let i = 0; i < n; i++) out[i] = table[view.getUint16(i * 2, true)] as number;
  return out;
}

function fail(file: string, reason: string, cause?: unknown): never {
  throw new CheckpointError(`${file}: ${reason}`, cause === undefined ? undefined : { cause });
}

/**
 * Parses and checks a safetensors header; `size` is the file's length in bytes (negative: the
 * length field itself is broken). Exported for in-memory blobs (safetensors-bytes.ts).
 */
export function parseHeader(
  file: string,
  json: string,
  headerEnd: number,
  size: number,
): { entries: Entry[]; metadata: Record<string, string> } {
  if (size < 0) fail(file, "header length does not fit the bytes");
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (e) {
    fail(file, "header is not valid JSON", e);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    fail(file, "header is not a JSON object");
  const entries: Entry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Object.values(raw).some((v) => typeof v !== "string"))
        fail(file, "__metadata__ is not a string map");
      metadata = raw as Record<string, string>;
      continue;
    }
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t.dtype !== "string" || !(t.dtype in DTYPE_BYTES))
      fail(file, `tensor '${name}' has dtype ${String(t.dtype)}; only F32, F16 and BF16 are supported`);
    const dtype = t.dtype as FloatDtype;
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0))
      fail(file, `tensor '${name}' has shape ${JSON.stringify(shape)}, expected a list of sizes`);
    const offs = t.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0))
      fail(file, `tensor '${name}' has data_offsets ${JSON.stringify(offs)}, expected [begin, end]`);
    const [begin, end] = offs as [number, number];
    const bytes = DTYPE_BYTES[dtype] * (shape as number[]).reduce((a, b) => a * b, 1);
    if (end - begin !== bytes)
      fail(file, `tensor '${name}' spans ${end - begin} bytes, its ${dtype} shape [${shape}] needs ${bytes}`);
    if (headerEnd + end > size)
      fail(file, `tensor '${name}' ends at byte ${headerEnd + end}, past the file's ${size} bytes`);
    entries.push({ name, dtype, shape: shape as number[], begin: headerEnd + begin, end: headerEnd + end });
  }
  entries.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < entries.length; i++) {
    const [prev, cur] = [entries[i - 1] as Entry, entries[i] as Entry];
    if (cur.begin < prev.end) fail(file, `tensors '${prev.name}' and '${cur.name}' overlap`);
  }
  return { entries, metadata };
}

/**
 * Reads every tensor of one safetensors file that `want` accepts (default: all) into `into`,
 * one read per tensor. CheckpointError names the file (and tensor) on a missing file, a bad
 * header, an unsupported dtype, an out-of-range tensor or a name already read from another file.
 */
export async function readSafetensorsFile(
  file: string,
  into: SafetensorsWeights,
  want: (name: string) => boolean = () => true,
): Promise<void> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(file, "r");
  } catch (e) {
    fail(file, `cannot open: ${(e as Error).message}`, e);
  }
  try {
    const { size } = await fh.stat();
    if (size < 8) fail(file, `${size} bytes is shorter than the 8-byte header length`);
    const lenBytes = Buffer.alloc(8);
    await fh.read(lenBytes, 0, 8, 0);
    const n = Number(lenBytes.readBigUInt64LE(0));
    if (n < 2 || n > MAX_HEADER_BYTES || 8 + n > size)
      fail(file, `header length ${n} does not fit the file's ${size} bytes`);
    const headerBytes = Buffer.alloc(n);
    await fh.read(headerBytes, 0, n, 8);
    const { entries, metadata } = parseHeader(file, headerBytes.toString("utf8"), 8 + n, size);
    if (into.weights.size === 0) into.metadata = metadata;
    for (const e of entries) {
      if (!want(e.name)) continue;
      if (into.weights.has(e.name)) fail(file, `tensor '${e.name}' was already read from another file`);
      const buf = Buffer.alloc(e.end - e.begin);
      const { bytesRead } = await fh.read(buf, 0, buf.length, e.begin);
      if (bytesRead !== buf.length) fail(file, `tensor '${e.name}' is truncated`);
      into.weights.set(e.name, { shape: e.shape, data: decodeFloats(buf, e.dtype) });
      into.dtypes.set(e.name, e.dtype);
    }
  } finally {
    await fh.close();
  }
}

/** Reads a sharded model's index: tensor name → shard file (relative to the index's directory). */
async function readIndex(file: string): Promise<Map<string, string>> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    fail(file, `cannot read the index: ${(e as Error).message}`, e);
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map))
    fail(file, "weight_map is missing or not an object");
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\") || shard.startsWith("."))
      fail(
        file,
        `weight_map['${name}'] must be a file name in the same directory, got ${JSON.stringify(shard)}`,
      );
    out.set(name, shard);
  }
  return out;
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * Every tensor of a Hugging Face model directory: the shards of `model.safetensors.index.json`
 * when it exists (preferred: a stale single file may lie beside a re-saved sharded model), else
 * `model.safetensors`. A sharded read checks that each shard holds exactly the tensors the index
 * assigns it.
 */
export async function readSafetensorsDir(dir: string): Promise<SafetensorsWeights> {
  const out: SafetensorsWeights = { weights: new Map(), dtypes: new Map(), metadata: {} };
  const indexFile = path.join(dir, INDEX_FILE);
  if (!(await exists(indexFile))) {
    const single = path.join(dir, SINGLE_FILE);
    if (!(await exists(single))) fail(dir, `has neither ${SINGLE_FILE} nor ${INDEX_FILE}`);
    await readSafetensorsFile(single, out);
    return out;
  }
  const index = await readIndex(indexFile);
  for (const shard of new Set(index.values())) {
    const file = path.join(dir, shard);
    await readSafetensorsFile(file, out, (name) => {
      const listed = index.get(name);
      if (listed !== shard)
        fail(file, `holds tensor '${name}', which ${INDEX_FILE} puts in ${listed ?? "no file"}`);
      return true;
    });
  }
  for (const [name, shard] of index) {
    if (!out.weights.has(name))
      fail(path.join(dir, shard), `lacks tensor '${name}' that ${INDEX_FILE} lists`);
  }
  return out;
}
