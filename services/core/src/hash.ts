/**
 * The one content hash of the project: lower-case hex SHA-256, as recorded in Object Store infos,
 * weights manifests and checkpoint responses, so every side compares the same string.
 */
import { createHash } from "node:crypto";

/** Lower-case hex SHA-256 of `data`. */
export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
