/**
 * A Policy replica's state: the weights it serves now, the frozen reference weights of the
 * current run, and the version of each. Model work and weight swaps go through one queue, so a
 * swap always happens between requests and every response is produced by exactly one version.
 */
import type { WeightsManifest } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import { WeightsError } from "../core/src/errors.js";
import { fetchWeightsBlob, watchLatestWeights } from "../core/src/weights/weights-channel.js";
import type { LoadedModel, ModelLoader } from "./loaded-model.js";

/** A model and the weights version it holds. */
export interface VersionedModel {
  model: LoadedModel;
  version: number;
  /** Object Store name it came from ("" for a local checkpoint). */
  objectName: string;
}

/** Serialises async work: each task starts after the previous one settled. */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T> | T): Promise<T> {
    const next = this.tail.then(task, task);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** The replica: serves `current`, scores with `reference`, follows the latest-weights pointer. */
export class PolicyReplica {
  private current: VersionedModel;
  private reference: VersionedModel;
  private readonly queue = new SerialQueue();
  private unwatch: (() => void) | null = null;
  /** Last swap failure, for GetInfo/logs; a failed swap keeps the previous weights. */
  lastSwapError = "";

  constructor(
    initial: LoadedModel,
    private readonly loader: ModelLoader,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.current = { model: initial, version: 0, objectName: "" };
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

  /** Run model work against one consistent (current, reference) pair. */
  withModels<T>(task: (current: VersionedModel, reference: VersionedModel) => Promise<T> | T): Promise<T> {
    return this.queue.run(() => task(this.current, this.reference));
  }

  /**
   * Fetch, verify and swap in the weights a manifest names (and its run's reference weights when
   * they changed). Refuses versions not newer than the one served.
   */
  async apply(bus: Bus, manifest: WeightsManifest): Promise<void> {
    const version = Number(manifest.version);
    if (version <= this.current.version) {
      throw new WeightsError(`refusing weights v${version}: already serving v${this.current.version}`);
    }
    const blob = await fetchWeightsBlob(bus, manifest.objectName, manifest.sha256);
    const needRef = manifest.referenceObjectName !== this.reference.objectName;
    const refBlob =
      !needRef || manifest.referenceObjectName === manifest.objectName
        ? blob
        : await fetchWeightsBlob(bus, manifest.referenceObjectName, manifest.referenceSha256);
    const model = this.loader.fromBlob(blob);
    const refModel = needRef ? (refBlob === blob ? model : this.loader.fromBlob(refBlob)) : null;
    await this.queue.run(() => {
      // Re-check under the queue: a newer version may have been swapped in while this one loaded.
      if (version <= this.current.version) {
        for (const m of new Set([model, refModel])) m?.dispose();
        throw new WeightsError(`refusing weights v${version}: already serving v${this.current.version}`);
      }
      const old = [this.current.model, this.reference.model];
      this.current = { model, version, objectName: manifest.objectName };
      if (refModel) {
        const refVersion = Number(manifest.referenceVersion);
        this.reference = { model: refModel, version: refVersion, objectName: manifest.referenceObjectName };
      }
      const live = new Set([this.current.model, this.reference.model]);
      for (const m of new Set(old)) if (!live.has(m)) m.dispose();
    });
  }

  /** Follow the latest-weights pointer on `bus`; failures are logged and the old weights kept. */
  async follow(bus: Bus): Promise<void> {
    let chain = Promise.resolve();
    this.unwatch = await watchLatestWeights(bus, (manifest) => {
      chain = chain.then(async () => {
        if (Number(manifest.version) <= this.current.version) return;
        try {
          await this.apply(bus, manifest);
          this.lastSwapError = "";
          this.log(
            `policy: now serving weights v${manifest.version} (run ${manifest.runId}, step ${manifest.step})`,
          );
        } catch (err) {
          this.lastSwapError = (err as Error).message;
          this.log(
            `policy: kept v${this.current.version}, could not swap to v${manifest.version}: ${this.lastSwapError}`,
          );
        }
      });
    });
  }

  /** Stop following and free the models. */
  async close(): Promise<void> {
    this.unwatch?.();
    this.unwatch = null;
    await this.queue.run(() => {
      for (const m of new Set([this.current.model, this.reference.model])) m.dispose();
    });
  }
}
