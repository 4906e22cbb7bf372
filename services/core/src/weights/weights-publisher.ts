/**
 * The Optimizer's side of the weights log: store a blob as the next version, sign its manifest,
 * move the latest pointer by compare-and-set, then collect blobs older than the retention count.
 * The blob is hashed in one pass (whole and per tensor, weights-stream.ts) and streamed to the
 * Object Store as views of its own memory: the publisher never makes a second copy of it.
 *
 * The pointer is writable by anyone holding NATS, so the publisher never trusts its version
 * blindly: it remembers the last version it published itself, and a pointer that is undecodable,
 * not signed by its own key, or holds an absurd version (2^53 + 10, a jump of millions) is
 * overwritten with its own next version, with a warning naming what it replaced. A bad pointer
 * therefore never blocks the next real publish.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { type WeightsManifest, WeightsManifestSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import type { Bus, ObjectStore } from "../bus/bus.js";
import { LATEST_WEIGHTS_KEY, weightsObjectName, weightsObjectVersion } from "../bus/subjects.js";
import { KvConflictError, ValidationError, WeightsError } from "../errors.js";
import { MAX_VERSION_JUMP, MAX_WEIGHTS_VERSION } from "./weights-manifest.js";
import { readPointer } from "./weights-pointer.js";
import { signatureProblem, signManifest, type WeightsSigner } from "./weights-signing.js";
import { blobChunks, digestBlob } from "./weights-stream.js";

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
  readonly objectName: string;
  readonly sha256: string;
  readonly size: number;
  readonly tensors: ReturnType<typeof digestBlob>["tensors"];
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
  /** Warnings: a replaced pointer, a failed collection. */
  log?: (line: string) => void;
}

/** Most compare-and-set attempts of one publish before giving up (too many writers). */
const MAX_ATTEMPTS = 10;

/** One Optimizer's publisher; keep one per process so it remembers its last version across runs. */
export class WeightsPublisher {
  /** The last version this publisher moved the pointer to (0: none yet). */
  lastVersion = 0;
  private readonly signer: WeightsSigner | undefined;
  private readonly retention: number | undefined;
  private readonly log: (line: string) => void;

  constructor(opts: WeightsPublisherOptions = {}) {
    if (opts.retention !== undefined && (!Number.isSafeInteger(opts.retention) || opts.retention < 1)) {
      throw new ValidationError("weightsRetention", `${opts.retention} must be a whole number >= 1`);
    }
    this.signer = opts.signer;
    this.retention = opts.retention;
    this.log = opts.log ?? (() => {});
  }

  /** The id of the key this publisher signs with ("" when it does not sign). */
  get keyId(): string {
    return this.signer?.keyId ?? "";
  }

  /**
   * Store `input.blob` as the next version and move the latest pointer to its manifest: a
   * {@link stage} followed at once by its {@link commit}.
   */
  async publish(bus: Bus, input: PublishWeightsInput): Promise<WeightsManifest> {
    return this.commit(bus, await this.stage(bus, input));
  }

  /**
   * Hash and store `input.blob` under the version this publisher expects to number it (one past
   * its own last one, or past a trusted pointer), without moving the pointer: replicas do not see
   * it yet. Why: an Optimizer that overlaps sampling with learning uploads a version while the
   * replicas still sample the previous step with the old one, and only moves the pointer (fast)
   * once that step's samples are all in, so the upload is off the pipeline's critical path.
   */
  async stage(bus: Bus, input: PublishWeightsInput): Promise<StagedWeights> {
    const objects = await bus.objects();
    // One pass over the bytes for both digests; the put then streams views of the same memory.
    const { sha256, tensors } = digestBlob(input.blob);
    const latest = await readPointer(bus);
    const version = this.nextVersion(latest?.manifest ?? null);
    const objectName = weightsObjectName(version, sha256);
    const info = await objects.putStream(objectName, () => blobChunks(input.blob));
    return { input, version, objectName, sha256: info.sha256, size: info.size, tensors };
  }

  /**
   * Sign the staged version's manifest and move the latest pointer to it by compare-and-set. The
   * version follows the pointer when this publisher trusts it (see {@link distrust}), else its own
   * last version; when that is no longer the staged number (another writer moved the pointer, or
   * a lost compare-and-set), the blob is stored again under the next free number. Blob names
   * carry the content hash, so concurrent publishers never overwrite each other.
   */
  async commit(bus: Bus, staged: StagedWeights): Promise<WeightsManifest> {
    const kv = await bus.kv();
    const objects = await bus.objects();
    const { input } = staged;
    let { objectName } = staged;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const latest = await readPointer(bus);
      const why = latest ? this.distrust(latest.manifest) : null;
      const parent = this.nextVersion(latest?.manifest ?? null) - 1;
      const version = parent + 1;
      if (why !== null) {
        this.log(`weights: the latest-weights pointer held ${why}; replacing it with v${version}`);
      }
      // 1. The blob under a name no other publisher can use (version + content hash).
      if (objectName !== weightsObjectName(version, staged.sha256)) {
        // (the staged blob goes unless the pointer itself names it: an identical blob, published)
        const named = latest && !(latest.manifest instanceof WeightsError) ? latest.manifest : null;
        if (objectName && ![named?.objectName, named?.referenceObjectName].includes(objectName)) {
          await objects.delete(objectName);
        }
        objectName = weightsObjectName(version, staged.sha256);
        await objects.putStream(objectName, () => blobChunks(input.blob));
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
        tensors: staged.tensors,
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
      await this.collect(objects, manifest);
      return manifest;
    }
    throw new KvConflictError(
      `could not move the latest-weights pointer after ${MAX_ATTEMPTS} attempts (too many publishers?)`,
    );
  }

  /** The number the next version takes after the pointer's manifest `m` (null: no pointer). */
  private nextVersion(m: WeightsManifest | WeightsError | null): number {
    const trusted = m !== null && this.distrust(m) === null ? (m as WeightsManifest) : null;
    return Math.max(trusted ? Number(trusted.version) : 0, this.lastVersion) + 1;
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

  /**
   * Delete weights blobs of versions older than the newest `retention` (counting from the one
   * just published), except the blobs the new manifest names (it and its run's reference,
   * pinned). Best effort: the publish has succeeded, so a failure is logged, not thrown.
   */
  private async collect(objects: ObjectStore, manifest: WeightsManifest): Promise<void> {
    if (this.retention === undefined) return;
    const keepFrom = Number(manifest.version) - this.retention + 1;
    const pinned = new Set([manifest.objectName, manifest.referenceObjectName]);
    try {
      for (const { name } of await objects.list()) {
        const version = weightsObjectVersion(name);
        if (version === null || version >= keepFrom || pinned.has(name)) continue;
        await objects.delete(name);
      }
    } catch (err) {
      this.log(`weights: could not delete blobs older than v${keepFrom}: ${(err as Error).message}`);
    }
  }
}

/**
 * Publish with a one-off, unsigned publisher that deletes nothing: for tests and tools. The
 * Optimizer keeps one {@link WeightsPublisher} (signing, retention, its own last version).
 */
export function publishWeights(bus: Bus, input: PublishWeightsInput): Promise<WeightsManifest> {
  return new WeightsPublisher().publish(bus, input);
}
