/**
 * The latest-weights pointer as stored: a `WeightsManifest` under {@link LATEST_WEIGHTS_KEY}.
 * Both the Optimizer (which moves it) and the replicas (which follow it) decode it here; anyone
 * who can write to NATS can put any bytes there, so a decode failure is a value, not a crash.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { type WeightsManifest, WeightsManifestSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../bus/bus.js";
import { LATEST_WEIGHTS_KEY } from "../bus/subjects.js";
import { WeightsError } from "../errors.js";

/** The manifest of pointer bytes; WeightsError (saying what is wrong) when they are not one. */
export function decodeManifest(value: Uint8Array): WeightsManifest {
  try {
    return fromBinary(WeightsManifestSchema, value);
  } catch (err) {
    throw new WeightsError(`the latest-weights pointer does not hold a manifest: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** The pointer's manifest (or why it is none) and its KV revision, or null before the first publish. */
export async function readPointer(
  bus: Bus,
): Promise<{ manifest: WeightsManifest | WeightsError; revision: number } | null> {
  const entry = await (await bus.kv()).get(LATEST_WEIGHTS_KEY);
  if (!entry) return null;
  let manifest: WeightsManifest | WeightsError;
  try {
    manifest = decodeManifest(entry.value);
  } catch (err) {
    manifest = err as WeightsError;
  }
  return { manifest, revision: entry.revision };
}

/**
 * The latest published manifest and its KV revision, or null before the first publish; a
 * WeightsError when the pointer holds bytes that are no manifest.
 */
export async function readLatestWeights(
  bus: Bus,
): Promise<{ manifest: WeightsManifest; revision: number } | null> {
  const latest = await readPointer(bus);
  if (!latest) return null;
  if (latest.manifest instanceof WeightsError) throw latest.manifest;
  return { manifest: latest.manifest, revision: latest.revision };
}
