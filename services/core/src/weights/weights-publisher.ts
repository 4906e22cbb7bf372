/**
 * The Optimizer's side of the weights log: store a blob as the next version, sign its manifest,
 * move the latest pointer by compare-and-set, then collect blobs older than the retention count.
 * The blob is hashed once per byte: per tensor and its header here (weights-stream.ts), the whole
 * blob by the Object Store put that streams it as views of its own memory (the publisher never
 * makes a second copy of it); objects are named by a content id of those digests.
 *
 * With `fullEvery` > 1 a version whose tensors partly equal its parent's (the publisher's own
 * previous version) is stored as a delta: the header and the changed tensors only
 * (weights-delta.ts), its manifest still describing the full blob. Every `fullEvery`-th version
 * of a chain, a run's first version, and any version after a pointer this publisher did not write
 * is full, so a replica rebuilding from scratch never reads more than `fullEvery` blobs; each
 * version's signed manifest is stored too (`.manifest`), for that rebuild. Retention keeps every
 * blob a retained version's chain needs.
 *
 * The pointer is writable by anyone holding NATS, so the publisher never trusts its version
 * blindly: it remembers the last version it published itself, and a pointer that is undecodable,
 * not signed by its own key, or holds an absurd version (2^53 + 10, a jump of millions) is
 * overwritten with its own next version, with a warning naming what it replaced. A bad pointer
 * therefore never blocks the next real publish.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  type WeightsManifest,
  WeightsManifestSchema,
  type WeightsTensor,
} from "../../gen/rlaif/common/v1/types_pb.js";
import type { Bus, ObjectStore } from "../bus/bus.js";
import { LATEST_WEIGHTS_KEY, weightsObjectName } from "../bus/subjects.js";
import { KvConflictError, ValidationError, WeightsError } from "../errors.js";
import { sha256Hex } from "../hash.js";
import { type DeltaPlan, planDelta } from "./weights-delta.js";
import { MAX_VERSION_JUMP, MAX_WEIGHTS_VERSION } from "./weights-manifest.js";
import { readPointer } from "./weights-pointer.js";
import { collectWeights } from "./weights-retention.js";
import { signatureProblem, signManifest, type WeightsSigner } from "./weights-signing.js";
import { blobChunks, contentIdOf, digestBlob, WEIGHTS_PUT_VIEW_BYTES } from "./weights-stream.js";

/** What the Optimizer says about a blob it publishes. */
export interface PublishWeightsInput {
  blob: Uint8Array;
  runId: string;
  step: number;
  modelKind: string;
  /** The run's reference weights; omit on a run's first publish to make this blob the reference. */
  reference?: { objectName: string; sha256: string; version: number };
}

/** A blob stored under its expected version, its pointer not moved yet (WeightsPublisher.stage). */
export interface StagedWeights {
  readonly input: PublishWeightsInput;
  /** The version it was stored for. */
  readonly version: number;
  /** Its object: the full blob, or a delta on `delta.base` (weights-delta.ts). */
  readonly objectName: string;
  /** SHA-256 and size of the full blob. */
  readonly sha256: string;
  /** The content id its object names carry (weights-stream.ts `contentIdOf`). */
  readonly contentId: string;
  readonly size: number;
  /** SHA-256 of the full blob's header when its tensors follow it with no gap, else "". */
  readonly headerSha256: string;
  /** Every tensor of the full blob, as digested. */
  readonly tensors: WeightsTensor[];
  /** The delta stored instead of the full blob, and the version it is on; null: stored full. */
  readonly delta: { plan: DeltaPlan; base: { version: number; sha256: string; fullVersion: number } } | null;
  /** Bytes of the stored object. */
  readonly storedBytes: number;
}

/** Options of a {@link WeightsPublisher}. */
export interface WeightsPublisherOptions {
  /** Signs every manifest; without it manifests go out unsigned (replicas with a verify key refuse them). */
  signer?: WeightsSigner;
  /**
   * Keep the blobs of the newest `retention` versions (and the run's reference, always); older
   * weights blobs are deleted after each publish. Omitted: nothing is deleted.
   */
  retention?: number;
  /**
   * Every how many versions a chain of deltas starts over with a full version (1: every version
   * full, no deltas; the default here, for tools and tests; the Optimizer passes
   * `weightsFullEvery`). A replica that does not hold a delta's base rebuilds from at most this
   * many blobs.
   */
  fullEvery?: number;
  /** Warnings: a replaced pointer, a failed collection. */
  log?: (line: string) => void;
}

/** What the publisher remembers of its last version, to publish the next one as a delta on it. */
interface LastPublished {
  version: number;
  sha256: string;
  /** The full version its chain starts from (itself when full). */
  fullVersion: number;
  tensors: Map<string, WeightsTensor>;
  /** False when its manifest could not be stored: a delta on it could not be rebuilt from scratch. */
  manifestStored: boolean;
}

/** Most compare-and-set attempts of one publish before giving up (too many writers). */
const MAX_ATTEMPTS = 10;

/** One Optimizer's publisher; keep one per process so it remembers its last version across runs. */
export class WeightsPublisher {
  /** The last version this publisher moved the pointer to (0: none yet). */
  lastVersion = 0;
  private readonly signer: WeightsSigner | undefined;
  private readonly retention: number | undefined;
  private readonly fullEvery: number;
  private readonly log: (line: string) => void;
  private last: LastPublished | null = null;
  /** The last commit's clean-up (manifest store, retention), still running or done; never rejects. */
  private housekeeping: Promise<void> = Promise.resolve();
  /** The chain start (full version) of each version this publisher wrote and still retains. */
  private readonly chainStarts = new Map<number, number>();

  constructor(opts: WeightsPublisherOptions = {}) {
    if (opts.retention !== undefined && (!Number.isSafeInteger(opts.retention) || opts.retention < 1)) {
      throw new ValidationError("weightsRetention", `${opts.retention} must be a whole number >= 1`);
    }
    const fullEvery = opts.fullEvery ?? 1;
    if (!Number.isSafeInteger(fullEvery) || fullEvery < 1) {
      throw new ValidationError("weightsFullEvery", `${opts.fullEvery} must be a whole number >= 1`);
    }
    this.signer = opts.signer;
    this.retention = opts.retention;
    this.fullEvery = fullEvery;
    this.log = opts.log ?? (() => {});
  }

  /** The id of the key this publisher signs with ("" when it does not sign). */
  get keyId(): string {
    return this.signer?.keyId ?? "";
  }

  /**
   * Store `input.blob` as the next version and move the latest pointer to its manifest: a
   * {@link stage} followed at once by its {@link commit} (`traceparent` as there).
   */
  async publish(bus: Bus, input: PublishWeightsInput, traceparent = ""): Promise<WeightsManifest> {
    return this.commit(bus, await this.stage(bus, input), traceparent);
  }

  /**
   * Hash and store `input.blob` under the version this publisher expects to number it (one past
   * its own last one, or past a trusted pointer), without moving the pointer: replicas do not see
   * it yet. Why: an Optimizer that overlaps sampling with learning uploads a version while the
   * replicas still sample the previous step with the old one, and only moves the pointer (fast)
   * once that step's samples are all in, so the upload is off the pipeline's critical path.
   */
  async stage(bus: Bus, input: PublishWeightsInput): Promise<StagedWeights> {
    // The previous version's manifest must be stored (and `last` set) before a delta is planned on it.
    await this.housekeeping;
    const objects = await bus.objects();
    // One hash per byte: the tensors' (and header's) digests here; the whole blob's SHA-256 is
    // the one the full put computes anyway (a blob with gaps is hashed whole here as well).
    const digest = digestBlob(input.blob, "weights blob", false);
    const { tensors, headerSha256 } = digest;
    const contentId = contentIdOf(digest);
    const latest = await readPointer(bus);
    const version = this.nextVersion(latest?.manifest ?? null);
    const base = this.deltaBase(version - 1, version, input);
    const plan = base ? planDelta(input.blob, digest, base.tensors) : null;
    const delta = plan && base ? { plan, base } : null;
    // A name no other publisher can use (version + the content's hash).
    const objectName = weightsObjectName(version, contentId, delta ? "delta" : "safetensors");
    const info = await objects.putStream(objectName, () =>
      plan ? plan.chunks() : blobChunks(input.blob, WEIGHTS_PUT_VIEW_BYTES),
    );
    // The full put hashed exactly these bytes (the store's own digest); a delta's put hashed the
    // delta, not the full blob, so that one pass is made here then.
    const fromPut = !delta && info.size === input.blob.length && /^[0-9a-f]{64}$/.test(info.sha256);
    const sha256 = digest.sha256 || (fromPut ? info.sha256 : sha256Hex(input.blob));
    const size = input.blob.length;
    return {
      input,
      version,
      objectName,
      sha256,
      contentId,
      size,
      headerSha256,
      tensors,
      delta,
      storedBytes: info.size,
    };
  }

  /**
   * Sign the staged version's manifest and move the latest pointer to it by compare-and-set. The
   * version follows the pointer when this publisher trusts it (see {@link distrust}), else its own
   * last version; when that is no longer the staged number (another writer moved the pointer, or
   * a lost compare-and-set), the blob is stored again, full, under the next free number (a delta
   * is only ever on this publisher's own previous version). Blob names carry the content hash,
   * so concurrent publishers never overwrite each other. `traceparent` (W3C) names the publish's
   * span, signed with the rest of the manifest, so each replica's swap span is its child ("" =
   * none, and the manifest's signed bytes are those of a manifest without the field).
   */
  async commit(bus: Bus, staged: StagedWeights, traceparent = ""): Promise<WeightsManifest> {
    await this.housekeeping;
    const kv = await bus.kv();
    const objects = await bus.objects();
    const { input } = staged;
    let { objectName, delta, storedBytes } = staged;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const latest = await readPointer(bus);
      // One signature check of the pointer per attempt (it used to be checked twice here).
      const why = latest ? this.distrust(latest.manifest) : null;
      const parent = this.nextVersion(latest?.manifest ?? null, why) - 1;
      const version = parent + 1;
      if (why !== null) {
        this.log(`weights: the latest-weights pointer held ${why}; replacing it with v${version}`);
      }
      // 1. The blob under a name no other publisher can use (version + content hash).
      if (version !== staged.version || objectName === "") {
        // (the staged blob goes unless the pointer itself names it: an identical blob, published)
        const named = latest && !(latest.manifest instanceof WeightsError) ? latest.manifest : null;
        if (objectName && ![named?.objectName, named?.referenceObjectName].includes(objectName)) {
          await objects.delete(objectName);
        }
        objectName = weightsObjectName(version, staged.contentId);
        delta = null;
        storedBytes = (
          await objects.putStream(objectName, () => blobChunks(input.blob, WEIGHTS_PUT_VIEW_BYTES))
        ).size;
      }
      const unsigned = create(WeightsManifestSchema, {
        version: BigInt(version),
        runId: input.runId,
        step: input.step,
        objectName,
        sha256: staged.sha256,
        sizeBytes: BigInt(staged.size),
        referenceObjectName: input.reference?.objectName ?? objectName,
        referenceSha256: input.reference?.sha256 ?? staged.sha256,
        referenceVersion: BigInt(input.reference?.version ?? version),
        modelKind: input.modelKind,
        createdUnixMs: BigInt(Date.now()),
        parentVersion: BigInt(parent),
        tensors: delta ? delta.plan.tensors : staged.tensors,
        baseVersion: BigInt(delta ? delta.base.version : 0),
        baseSha256: delta ? delta.base.sha256 : "",
        fullVersion: BigInt(delta ? delta.base.fullVersion : version),
        blobSizeBytes: BigInt(storedBytes),
        headerSha256: staged.headerSha256,
        traceparent,
      });
      const manifest = this.signer ? signManifest(unsigned, this.signer) : unsigned;
      // 2. Move the pointer only if nobody else did since we read it.
      try {
        await kv.update(LATEST_WEIGHTS_KEY, toBinary(WeightsManifestSchema, manifest), latest?.revision ?? 0);
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
        // 3. Lost the race: that version is the winner's. Drop our blob (unless the winner's blob
        //    is byte-identical, hence the same name) and try the next number.
        const now = await readPointer(bus);
        const winner = now && !(now.manifest instanceof WeightsError) ? now.manifest : null;
        if (![winner?.objectName, winner?.referenceObjectName].includes(objectName)) {
          await objects.delete(objectName);
        }
        objectName = "";
        continue;
      }
      this.lastVersion = version;
      // The pointer has moved: the version is published. Storing its manifest (read only when a
      // later delta is rebuilt from scratch) and collecting old blobs run after this returns, so
      // neither the caller nor the replicas' first fetch waits on that clean-up; the next stage or
      // commit waits for it, and {@link settled} exposes it. Both overlap (collection never touches
      // the newest version); `remember` records the chain start before its first await, so the
      // collection already sees it. Neither rejects: a failure is logged, as before.
      const retention = this.retention;
      this.housekeeping = Promise.all([
        this.remember(objects, manifest, staged.tensors),
        retention === undefined
          ? null
          : collectWeights(objects, manifest, retention, this.chainStarts, this.log),
      ]).then(
        () => {},
        (err: Error) => this.log(`weights: clean-up after v${version} failed: ${err.message}`),
      );
      return manifest;
    }
    throw new KvConflictError(
      `could not move the latest-weights pointer after ${MAX_ATTEMPTS} attempts (too many publishers?)`,
    );
  }

  /**
   * Resolves once the last publish's clean-up (its manifest stored, older blobs collected) is
   * done. Why: `publish` returns as soon as the pointer moved; a caller about to exit, or a test
   * that lists the store, waits for the clean-up here.
   */
  settled(): Promise<void> {
    return this.housekeeping;
  }

  /**
   * The number the next version takes after the pointer's manifest `m` (null: no pointer); `why`
   * is what {@link distrust} says of `m`, checked here when the caller has not already.
   */
  private nextVersion(
    m: WeightsManifest | WeightsError | null,
    why: string | null = m === null ? null : this.distrust(m),
  ): number {
    const trusted = m !== null && why === null ? (m as WeightsManifest) : null;
    return Math.max(trusted ? Number(trusted.version) : 0, this.lastVersion) + 1;
  }

  /**
   * The version the next one may be a delta on, or null for a full version: deltas are on
   * (`fullEvery` > 1), this is not a run's first version (`reference` given: a reference is
   * always a full blob), the parent is this publisher's own last version with its manifest
   * stored, and the chain from its full version stays shorter than `fullEvery`.
   */
  private deltaBase(parent: number, version: number, input: PublishWeightsInput): LastPublished | null {
    const last = this.last;
    if (this.fullEvery === 1 || input.reference === undefined || last === null) return null;
    if (last.version !== parent || !last.manifestStored) return null;
    return version - last.fullVersion < this.fullEvery ? last : null;
  }

  /**
   * After a won compare-and-set: store the signed manifest (a replica rebuilding a later delta
   * reads it) and remember this version as the next one's possible base.
   */
  private async remember(
    objects: ObjectStore,
    manifest: WeightsManifest,
    tensors: WeightsTensor[],
  ): Promise<void> {
    const version = Number(manifest.version);
    if (this.fullEvery === 1) return;
    // Retention asks only for the newest `retention` versions' chain starts.
    this.chainStarts.set(version, Number(manifest.fullVersion));
    for (const v of this.chainStarts.keys())
      if (v < version - (this.retention ?? 1)) this.chainStarts.delete(v);
    let manifestStored = true;
    try {
      await objects.put(
        weightsObjectName(version, manifest.sha256, "manifest"),
        toBinary(WeightsManifestSchema, manifest),
      );
    } catch (err) {
      // The next version is then full: no replica could rebuild a delta on this one from scratch.
      manifestStored = false;
      this.log(`weights: could not store the manifest of v${version}: ${(err as Error).message}`);
    }
    this.last = {
      version,
      sha256: manifest.sha256,
      fullVersion: Number(manifest.fullVersion),
      tensors: new Map(tensors.map((t) => [t.name, t])),
      manifestStored,
    };
  }

  /**
   * What is wrong with the pointer's manifest for this publisher, or null when it may number
   * after it: undecodable, a version that is not in 1..2^53−1 or is more than MAX_VERSION_JUMP
   * past this publisher's own last one, or (with a signer) not signed by this publisher's key.
   */
  private distrust(m: WeightsManifest | WeightsError): string | null {
    if (m instanceof WeightsError) return "bytes that are no manifest";
    if (m.version < 1n || m.version > BigInt(MAX_WEIGHTS_VERSION)) return `the absurd version ${m.version}`;
    const v = Number(m.version);
    if (this.lastVersion > 0 && v - this.lastVersion > MAX_VERSION_JUMP) {
      return `v${v}, more than ${MAX_VERSION_JUMP} past this Optimizer's own v${this.lastVersion}`;
    }
    const problem = this.signer ? signatureProblem(m, this.signer) : null;
    return problem ? `v${v} (run "${m.runId}"), but ${problem}` : null;
  }
}

/**
 * Publish with a one-off, unsigned publisher that deletes nothing: for tests and tools. The
 * Optimizer keeps one {@link WeightsPublisher} (signing, retention, its own last version).
 */
export function publishWeights(bus: Bus, input: PublishWeightsInput): Promise<WeightsManifest> {
  return new WeightsPublisher().publish(bus, input);
}
