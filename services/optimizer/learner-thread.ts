/**
 * The Optimizer's learner in a worker thread of its own. Why: tfjs computes synchronously, so an
 * update on the main thread stops everything else there for its whole length — the Rollout's
 * requests, the built-in Feedback, the bus, WatchMetrics. In its own thread the update runs on a
 * core of its own while the main thread keeps the services going, and with `maxStaleness` > 0 the
 * next step's samples are drawn (by the Policy, in its thread or process) during the update.
 *
 * The thread holds the model, Adam and the learner's state; this side is a {@link Learner} whose
 * every method is a call to it (learner-thread-entry.ts). Trajectories cross as protobuf bytes,
 * weights blobs come back moved, not copied. The same checkpoint, settings and trajectories give
 * bit-identical weights in either thread.
 */

import type { EventLoopUtilization } from "node:perf_hooks";
import type { Worker } from "node:worker_threads";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Trajectory, TrajectorySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { WorkerThreadError } from "../core/src/errors.js";
import type { BackendName } from "../core/src/model/backend.js";
import type { WeightMap } from "../core/src/model/causal-lm.js";
import type { CheckpointTokenizer } from "../core/src/model/checkpoint.js";
import type { ThreadMemory } from "../core/src/thread/memory-probe.js";
import {
  CallClient,
  errorFromWire,
  startModuleWorker,
  threadExited,
  threadFailed,
  type WireError,
} from "../core/src/thread/worker-rpc.js";
import type { Learner, LearnerStepResult } from "./run-driver.js";

/** What the thread is started with (its `workerData`). */
export interface LearnerThreadInit {
  checkpoint: string;
  settings: RunSettings;
  resume: boolean;
  backend: "auto" | BackendName;
}

/** The thread's first message: the learner is loaded (or why not). */
export type LearnerThreadReady =
  | {
      type: "ready";
      modelKind: string;
      contextLength: number;
      tokenizer: CheckpointTokenizer;
      backend: string;
    }
  | { type: "failed"; error: WireError };

/** The calls the thread answers (learner-thread-entry.ts). */
export const LEARNER_CALLS = {
  step: "step",
  weights: "weights",
  save: "save",
  memory: "memory",
} as const;

/** Arguments of the `save` call. */
export interface SaveArgs {
  path: string;
  metadata: Record<string, string>;
  tensors?: WeightMap;
}

/** A {@link Learner} computing in a worker thread. */
export class ThreadLearner implements Learner {
  private disposed = false;

  private constructor(
    private readonly worker: Worker,
    private readonly calls: CallClient,
    readonly modelKind: string,
    readonly contextLength: number,
    /** The model's tokenizer, as the thread's learner reports it. */
    readonly tokenizer: CheckpointTokenizer,
    /** The compute backend the thread runs on (it chose the same way as the main thread). */
    readonly backend: string,
  ) {}

  /** Load the learner of `checkpoint` (resumed or fresh, like ReinforceLearner.fromCheckpoint) in a new thread. */
  static async start(init: LearnerThreadInit): Promise<ThreadLearner> {
    const worker = startModuleWorker(new URL("./learner-thread-entry.ts", import.meta.url), init);
    const calls = new CallClient(worker);
    const ready = await new Promise<Extract<LearnerThreadReady, { type: "ready" }>>((resolve, reject) => {
      const first = (m: LearnerThreadReady | { id: number }) => {
        if (!("type" in m)) return;
        worker.off("message", first);
        if (m.type === "ready") resolve(m);
        else reject(errorFromWire(m.error));
      };
      worker.on("message", first);
      // A thread that ends fails its start, or every call waiting and to come (the first
      // failure wins: after dispose() calls say so, not how the thread exited).
      const end = (err: WorkerThreadError) => {
        calls.fail(err);
        reject(err);
      };
      worker.on("error", (err) => end(threadFailed("learner", err)));
      worker.on("exit", (code) => end(threadExited("learner", code)));
    }).catch(async (err: unknown) => {
      await worker.terminate();
      throw err;
    });
    const learner = new ThreadLearner(
      worker,
      calls,
      ready.modelKind,
      ready.contextLength,
      ready.tokenizer,
      ready.backend,
    );
    return learner;
  }

  step(trajectories: Trajectory[]): Promise<LearnerStepResult> {
    return this.calls.call(
      LEARNER_CALLS.step,
      trajectories.map((t) => toBinary(TrajectorySchema, t)),
    );
  }

  weightsBlob(): Promise<Uint8Array> {
    return this.calls.call(LEARNER_CALLS.weights);
  }

  saveCheckpoint(
    path: string,
    metadata: Record<string, string>,
    resumable?: { tensors: WeightMap },
  ): Promise<string> {
    const arg: SaveArgs = { path, metadata, ...(resumable ? { tensors: resumable.tensors } : {}) };
    return this.calls.call(LEARNER_CALLS.save, arg);
  }

  memory(): Promise<ThreadMemory> {
    return this.calls.call(LEARNER_CALLS.memory);
  }

  eventLoopUtilization(prev?: EventLoopUtilization): EventLoopUtilization {
    return this.worker.performance.eventLoopUtilization(prev);
  }

  /** Frees the thread's model and ends it (calls still waiting reject). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.calls.fail(new WorkerThreadError("the learner was disposed"));
    void this.worker.terminate();
  }
}

/** The trajectories of a `step` call, decoded on the thread's side. */
export function decodeStepArg(arg: Uint8Array[]): Trajectory[] {
  return arg.map((b) => fromBinary(TrajectorySchema, b));
}
