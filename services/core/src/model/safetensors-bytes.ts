/**
 * safetensors in memory: F32 tensors and a string `__metadata__` to bytes and back. The project's
 * checkpoints (checkpoint.ts) and LoRA's adapter blobs and PEFT files (lora-files.ts) are all
 * this layout; one writer keeps their byte order, padding and alignment the same.
 */
import { endianness } from "node:os";
import { ValidationError } from "../errors.js";
import type { WeightMap } from "./causal-lm.js";
import { decodeFloats, parseHeader } from "./safetensors.js";

const LITTLE_ENDIAN_HOST = endianness() === "LE";
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function floatBytes(data: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  data.forEach((x, i) => {
    view.setFloat32(i * 4, x, true);
  });
  return out;
}

/**
 * The safetensors bytes of `tensors` (F32, in name order, header padded to 8 bytes) with
 * `metadata` as `__metadata__`. ValidationError naming `weights.<name>` when a tensor's value
 * count does not fit its shape.
 */
export function encodeSafetensors(tensors: WeightMap, metadata: Record<string, string>): Uint8Array {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const w = tensors.get(name) as { shape: number[]; data: Float32Array };
    if (w.data.length !== w.shape.reduce((a, b) => a * b, 1)) {
      throw new ValidationError(`weights.${name}`, `has ${w.data.length} values for shape [${w.shape}]`);
    }
    header[name] = { dtype: "F32", shape: w.shape, data_offsets: [offset, offset + w.data.byteLength] };
    offset += w.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerBytes.length, true);
  view.setUint32(4, 0, true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const name of names) {
    const bytes = floatBytes((tensors.get(name) as { data: Float32Array }).data);
    out.set(bytes, at);
    at += bytes.length;
  }
  return out;
}

/**
 * Every tensor (decoded to float32) and the metadata of safetensors bytes; `where` names them in
 * the CheckpointError any defect raises.
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  where: string,
): { tensors: WeightMap; metadata: Record<string, string> } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length < 8 ? -1 : Number(view.getBigUint64(0, true));
  const ok = n >= 2 && n <= MAX_HEADER_BYTES && 8 + n <= bytes.length;
  const json = ok ? new TextDecoder().decode(bytes.subarray(8, 8 + n)) : "";
  const { entries, metadata } = parseHeader(where, json, 8 + n, ok ? bytes.length : -1);
  const tensors: WeightMap = new Map();
  for (const e of entries)
    tensors.set(e.name, { shape: e.shape, data: decodeFloats(bytes.subarray(e.begin, e.end), e.dtype) });
  return { tensors, metadata };
}
