/**
 * Retention of weights objects: after each publish the Optimizer deletes the objects (blobs,
 * deltas, stored manifests) of versions older than the newest `retention`, but never one a
 * retained delta still needs: its chain back to its full version is kept too, so a replica that
 * rebuilds a retained version (weights-resolve.ts) finds every blob and manifest on the way.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { type WeightsManifest, WeightsManifestSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import type { ObjectStore } from "../bus/bus.js";
import { weightsObjectVersion } from "../bus/subjects.js";

/**
 * The full version version `v`'s chain starts from: from `known` (the publisher's own versions),
 * else from its stored manifest; a delta whose manifest is not readable gives 0 (keep everything
 * older), a version with only a full blob (or none) is its own start.
 */
async function chainStart(
  objects: ObjectStore,
  names: string[],
  v: number,
  known: ReadonlyMap<number, number>,
): Promise<number> {
  const own = known.get(v);
  if (own !== undefined) return own;
  const mine = names.filter((n) => weightsObjectVersion(n) === v);
  if (!mine.some((n) => n.endsWith(".delta"))) return v;
  let start = v;
  for (const name of mine.filter((n) => n.endsWith(".manifest"))) {
    try {
      const m = fromBinary(WeightsManifestSchema, await objects.get(name));
      start = Math.min(start, Number(m.fullVersion));
    } catch {
      return 0;
    }
  }
  return start === v ? 0 : start;
}

/**
 * Delete weights objects of versions older than the newest `retention` (counting from
 * `manifest`, the one just published) and older than every retained version's chain start,
 * except the blobs `manifest` names (it and its run's reference, pinned). `chainStarts` (version
 * → full version of the publisher's own versions) is pruned to what is kept. Best effort: the
 * publish has succeeded, so a failure is logged, not thrown.
 */
export async function collectWeights(
  objects: ObjectStore,
  manifest: WeightsManifest,
  retention: number,
  chainStarts: Map<number, number>,
  log: (line: string) => void,
): Promise<void> {
  const newest = Number(manifest.version);
  let keepFrom = newest - retention + 1;
  const pinned = new Set([manifest.objectName, manifest.referenceObjectName]);
  try {
    const names = (await objects.list()).map((o) => o.name);
    // A retained delta needs its chain back to its full version: keep from the oldest start.
    for (let v = Math.max(1, keepFrom); v <= newest; v++) {
      keepFrom = Math.min(keepFrom, await chainStart(objects, names, v, chainStarts));
    }
    const old = names.filter((name) => {
      const version = weightsObjectVersion(name);
      return version !== null && version < keepFrom && !pinned.has(name);
    });
    // Independent deletes (a version's blob and its manifest, often): one round of waits, not one each.
    await Promise.all(old.map((name) => objects.delete(name)));
    for (const v of chainStarts.keys()) if (v < keepFrom) chainStarts.delete(v);
  } catch (err) {
    log(`weights: could not delete blobs older than v${keepFrom}: ${(err as Error).message}`);
  }
}
