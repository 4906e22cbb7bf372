/**
 * A Policy replica's state: the weights it serves now, the frozen reference weights of the
 * current run, and the version of each. Calls run concurrently (their rows share forward passes
 * in the models' batchers); each call leases one consistent (current, reference) pair for its
 * whole duration, so every response is produced by exactly one version. A swap takes effect for
 * calls that start after it; the models it replaces are freed once their last lease ends.
 *
 * A LoRA run publishes adapter-only versions after its first: the replica checks that the
 * adapters were trained on the reference it holds (the base's SHA-256) and serves them over that
 * reference's weights, one copy of the base for both. An adapted model is only ever paired with
 * the reference it shares, so a call's lease on the pair keeps the base alive as long as it runs.
 *
 * A delta version (weights-delta.ts) is applied on the served blob, which the replica keeps for
 * that (one more copy of the served weights in memory); a replica not serving a delta's base
 * rebuilds it from the stored chain (weights-resolve.ts), and verifies the result either way.
 *
 * Anyone who can write to NATS can move the pointer, so every manifest is checked before any
 * blob is read (weights-channel.ts `checkManifest`): with a verify key, it must be signed by that
 * key; always, its version must be a safe integer newer than the served one and not absurdly far
 * ahead, and its parent chain must hold. Its blob must then match each tensor's SHA-256 and the
 * header's (a manifest with `headerSha256`: together they cover every byte, one hashing pass) or
 * else the whole blob's SHA-256. A refused version is logged and recorded in `lastSwapError`; the replica keeps
 * serving what it has, and takes the next good version.
 */
import type { WeightsManifest } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import { WeightsError } from "../core/src/errors.js";
import { checkAdapterBase, decodeAdapterBlob, isAdapterBlob } from "../core/src/model/lora-files.js";
import { ATTR, endSpan, inSpan, startSpan } from "../core/src/telemetry/spans.js";
import { checkManifest, fetchWeightsBlob, watchLatestWeights } from "../core/src/weights/weights-channel.js";
import { versionProblem } from "../core/src/weights/weights-manifest.js";
import { readPointer } from "../core/src/weights/weights-pointer.js";
import { fetchVersionBlob } from "../core/src/weights/weights-resolve.js";
import type { WeightsVerifier } from "../core/src/weights/weights-signing.js";
import type { LoadedModel, ModelLoader } from "./loaded-model.js";

/** A model and the weights version it holds. */
export interface VersionedModel {
  model: LoadedModel;
  version: number;
  /** Object Store name it came from ("" for a local checkpoint). */
  objectName: string;
  /** SHA-256 of the weights blob it was built from ("" for a local checkpoint): adapters name it. */
  sha256: string;
  /**
   * The full blob it was built from, kept while it is served so a delta version on it needs only
   * the changed tensors (null for a local checkpoint, and on the reference).
   */
  blob: Uint8Array | null;
}

/**
 * Counts the calls using each model and frees a retired model when its last call ends, so a swap
 * never pulls weights from under a generation in progress.
 */
class Leases {
  private readonly counts = new Map<LoadedModel, number>();
  private readonly retired = new Set<LoadedModel>();
  private drained: (() => void) | null = null;

  acquire(m: LoadedModel): void {
    this.counts.set(m, (this.counts.get(m) ?? 0) + 1);
  }

  release(m: LoadedModel): void {
    const n = (this.counts.get(m) ?? 1) - 1;
    if (n > 0) this.counts.set(m, n);
    else {
      this.counts.delete(m);
      this.freeIfRetired(m);
    }
  }

  /** Frees `m` now, or when its last lease ends. */
  retire(m: LoadedModel): void {
    this.retired.add(m);
    this.freeIfRetired(m);
  }

  /** Resolves once every retired model has been freed. */
  async drain(): Promise<void> {
    if (this.retired.size === 0) return;
    await new Promise<void>((resolve) => {
      this.drained = resolve;
    });
  }

  private freeIfRetired(m: LoadedModel): void {
    if (!this.retired.has(m) || this.counts.has(m)) return;
    this.retired.delete(m);
    m.dispose();
    if (this.retired.size === 0) this.drained?.();
  }
}

/** Options of a replica. */
export interface PolicyReplicaOptions {
  /** The Optimizer's public key: without it unsigned manifests are taken (hashes still checked). */
  verifier?: WeightsVerifier;
}

/** The replica: serves `current`, scores with `reference`, follows the latest-weights pointer. */
export class PolicyReplica {
  private current: VersionedModel;
  private reference: VersionedModel;
  private readonly leases = new Leases();
  /** Callbacks of `waitForVersion` calls, run after every swap. */
  private readonly swapped = new Set<() => void>();
  private unwatch: (() => void) | null = null;
  /** Last swap failure, for GetInfo/logs; a failed swap keeps the previous weights. */
  lastSwapError = "";

  constructor(
    initial: LoadedModel,
    private readonly loader: ModelLoader,
    private readonly log: (line: string) => void = () => {},
    private readonly opts: PolicyReplicaOptions = {},
  ) {
    this.current = { model: initial, version: 0, objectName: "", sha256: "", blob: null };
    this.reference = this.current;
  }

  /** The serving model and version. */
  get serving(): VersionedModel {
    return this.current;
  }

  /** The reference model and version. */
  get referenceModel(): VersionedModel {
    return this.reference;
  }

  /**
   * Resolves true once the serving version is `min` or newer, false if `signal` fires first.
   * Why: a request that needs the version just published waits for the swap already under way
   * instead of being sampled with weights its caller must discard.
   */
  async waitForVersion(min: number, signal: AbortSignal): Promise<boolean> {
    while (this.current.version < min) {
      if (signal.aborted) return false;
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener("abort", done);
          this.swapped.delete(done);
          resolve();
        };
        this.swapped.add(done);
        signal.addEventListener("abort", done, { once: true });
      });
    }
    return true;
  }

  /** Run model work against one consistent (current, reference) pair, leased until it settles. */
  async withModels<T>(
    task: (current: VersionedModel, reference: VersionedModel) => Promise<T> | T,
  ): Promise<T> {
    const pair = [this.current, this.reference] as const;
    for (const v of pair) this.leases.acquire(v.model);
    try {
      return await task(...pair);
    } finally {
      for (const v of pair) this.leases.release(v.model);
    }
  }

  /**
   * Check a manifest (signature, version, chain), then fetch, verify and swap in the weights it
   * names (and its run's reference weights when they changed). WeightsError for a refused
   * manifest, ObjectIntegrityError for a blob that does not match it; either way nothing changes.
   */
  async apply(bus: Bus, manifest: WeightsManifest): Promise<void> {
    checkManifest(manifest, this.current.version, this.opts.verifier);
    const version = Number(manifest.version);
    // Full, or a delta applied on the served blob (or on its chain rebuilt from the store).
    const blob = await fetchVersionBlob(bus, manifest, this.current, this.opts.verifier);
    const needRef = manifest.referenceObjectName !== this.reference.objectName;
    const refBlob =
      !needRef || manifest.referenceObjectName === manifest.objectName
        ? blob
        : await fetchWeightsBlob(bus, manifest.referenceObjectName, manifest.referenceSha256);
    const refModel = needRef ? (refBlob === blob ? null : this.loader.fromBlob(refBlob)) : null;
    let model: LoadedModel;
    try {
      model = isAdapterBlob(blob)
        ? this.adapted(
            blob,
            refModel ?? this.reference.model,
            needRef ? manifest.referenceSha256 : this.reference.sha256,
          )
        : this.loader.fromBlob(blob);
    } catch (err) {
      refModel?.dispose();
      throw err;
    }
    // Re-check: a newer version may have been swapped in while this one loaded.
    const late = versionProblem(manifest.version, this.current.version);
    if (late) {
      for (const m of new Set([model, refModel])) m?.dispose();
      throw new WeightsError(`refusing weights v${version}: ${late}`);
    }
    const old = [this.current.model, this.reference.model];
    this.current = { model, version, objectName: manifest.objectName, sha256: manifest.sha256, blob };
    if (needRef) {
      this.reference = {
        model: refModel ?? model,
        version: Number(manifest.referenceVersion),
        objectName: manifest.referenceObjectName,
        sha256: manifest.referenceSha256,
        blob: null,
      };
    }
    const live = new Set([this.current.model, this.reference.model]);
    for (const m of new Set(old)) if (!live.has(m)) this.leases.retire(m);
    for (const wake of [...this.swapped]) wake();
  }

  /**
   * The model of adapter blob bytes over `base`, whose blob had SHA-256 `baseSha256`; a
   * WeightsError when the adapters were trained on another base or the loader cannot share one.
   */
  private adapted(blob: Uint8Array, base: LoadedModel, baseSha256: string): LoadedModel {
    const adapters = decodeAdapterBlob(blob);
    checkAdapterBase(adapters, baseSha256);
    if (!this.loader.fromAdapters) throw new WeightsError("this replica's loader cannot apply LoRA adapters");
    return this.loader.fromAdapters(base, adapters);
  }

  /**
   * Follow the latest-weights pointer on `bus`, starting with its current value (so a replica
   * that starts late, or was down, catches up at once); refusals and failures are logged and the
   * old weights kept. Only a redelivery of the manifest already served is skipped silently.
   * Resolves once that current value has been taken (true) or refused, or there is none (false):
   * a replica that starts while a run is under way serves the run's weights from its first call.
   */
  async follow(bus: Bus): Promise<boolean> {
    let chain = Promise.resolve();
    // The catch-up, before watching: the watch's first delivery is then the same manifest again.
    const now = await readPointer(bus);
    let caughtUp: WeightsManifest | null = null;
    let took = false;
    if (now?.manifest instanceof WeightsError) this.refuse("the latest pointer", now.manifest.message);
    else if (now) {
      caughtUp = now.manifest;
      await this.take(bus, now.manifest);
      took = this.current.version === Number(now.manifest.version);
    }
    this.unwatch = await watchLatestWeights(
      bus,
      (manifest) => {
        const again = caughtUp && sameManifest(manifest, caughtUp);
        caughtUp = null;
        if (!again) chain = chain.then(() => this.take(bus, manifest));
      },
      (err) => {
        chain = chain.then(() => this.refuse("the latest pointer", err.message));
      },
    );
    return took;
  }

  /** Record and log why the replica kept what it serves instead of `what`. */
  private refuse(what: string, why: string): void {
    this.lastSwapError = why;
    this.log(`policy: kept v${this.current.version}, could not swap to ${what}: ${why}`);
  }

  /** Apply one manifest from the pointer (in its own span), logging the swap or the refusal. */
  private async take(bus: Bus, manifest: WeightsManifest): Promise<void> {
    const served = this.current;
    if (Number(manifest.version) === served.version && manifest.sha256 === served.sha256) return;
    // A child of the Optimizer's publish span (the manifest's traceparent), so the swap is part
    // of the step's trace; a trace of its own when the manifest names none.
    const span = startSpan("weights swap", manifest.traceparent || undefined, {
      attributes: {
        [ATTR.runId]: manifest.runId,
        [ATTR.step]: Number(manifest.step),
        [ATTR.weightsVersion]: Number(manifest.version),
      },
    });
    // In the span: the swap's log lines (taken or refused) carry its trace id.
    await inSpan(span, async () => {
      try {
        await this.apply(bus, manifest);
        this.lastSwapError = "";
        const signed = manifest.signature.length > 0 ? `, signed by key ${manifest.keyId}` : ", unsigned";
        this.log(
          `policy: now serving weights v${manifest.version} (run ${manifest.runId}, step ${manifest.step}${signed})`,
        );
        endSpan(span);
      } catch (err) {
        this.refuse(`v${manifest.version}`, (err as Error).message);
        endSpan(span, err);
      }
    });
  }

  /** Stop following and free the models once the calls using them have ended. */
  async close(): Promise<void> {
    this.unwatch?.();
    this.unwatch = null;
    for (const m of new Set([this.current.model, this.reference.model])) this.leases.retire(m);
    await this.leases.drain();
  }
}

/** Whether two pointer values are the same manifest (version, blob and signature). */
function sameManifest(a: WeightsManifest, b: WeightsManifest): boolean {
  return a.version === b.version && a.sha256 === b.sha256 && Buffer.compare(a.signature, b.signature) === 0;
}
