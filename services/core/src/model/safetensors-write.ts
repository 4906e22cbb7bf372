/**
 * Writing Hugging Face safetensors files: float32 weights stored as F32, F16 or BF16 (rounded to
 * nearest, ties to even), header metadata `{"format": "pt"}` as `save_pretrained` writes it. Why
 * apart from checkpoint.ts: an export must give back the dtype the user brought, while the
 * project's own checkpoints stay float32.
 */
import { writeFile } from "node:fs/promises";
import { DTYPE_BYTES, type FloatDtype } from "./safetensors.js";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bits of a float32, round-to-nearest-even (NaN stays a quiet NaN). */
export function toBf16(x: number): number {
  f32[0] = x;
  const b = u32[0] as number;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE half bits of a float32, round-to-nearest-even (overflow → ±inf, tiny → subnormal or ±0). */
export function toF16(x: number): number {
  f32[0] = x;
  const b = u32[0] as number;
  const sign = (b >>> 16) & 0x8000;
  const e32 = (b >>> 23) & 0xff;
  let m = b & 0x7fffff;
  if (e32 === 255) return sign | 0x7c00 | (m ? 0x200 : 0);
  const e = e32 - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  let shift = 13;
  let h: number;
  if (e <= 0) {
    if (e < -10) return sign;
    m |= 0x800000;
    shift = 14 - e;
    h = m >>> shift;
  } else h = (e << 10) | (m >>> 13);
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) === 1)) h++; // a carry into the exponent is still right
  return sign | h;
}

/** A tensor to write: float32 values and the dtype to store them as. */
export interface TensorOut {
  shape: number[];
  data: Float32Array;
  dtype: FloatDtype;
}

function tensorBytes(t: TensorOut): Uint8Array {
  const out = new Uint8Array(t.data.length * DTYPE_BYTES[t.dtype]);
  const view = new DataView(out.buffer);
  t.data.forEach((x, i) => {
    if (t.dtype === "F32") view.setFloat32(i * 4, x, true);
    else view.setUint16(i * 2, t.dtype === "BF16" ? toBf16(x) : toF16(x), true);
  });
  return out;
}

/** Writes `tensors` (sorted by name, as safetensors does) to `file`. */
export async function writeSafetensors(file: string, tensors: ReadonlyMap<string, TensorOut>): Promise<void> {
  const names = [...tensors.keys()].sort();
  const parts = names.map((n) => tensorBytes(tensors.get(n) as TensorOut));
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  names.forEach((name, i) => {
    const t = tensors.get(name) as TensorOut;
    const size = (parts[i] as Uint8Array).length;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  });
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const head = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(head.length));
  await writeFile(file, Buffer.concat([len, head, ...parts]));
}
