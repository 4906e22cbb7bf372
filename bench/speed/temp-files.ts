/**
 * Scratch files for tensors passed between the benchmark and its PyTorch worker (a logits tensor
 * is ~3 MB of float32: a file, not a JSON line). One directory per process, removed at exit.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let dir: string | null = null;

/** A path named `name` in this process's scratch directory (created on first use). */
export function tempFile(name: string): string {
  if (dir === null) {
    const made = mkdtempSync(join(tmpdir(), "rlaif-speed-"));
    dir = made;
    process.once("exit", () => rmSync(made, { recursive: true, force: true }));
  }
  return join(dir, name);
}

/** A little-endian float32 file as an array. */
export function readFloat32(file: string): Float32Array {
  const bytes = readFileSync(file);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}
