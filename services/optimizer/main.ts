/**
 * Starts the Optimizer as a gRPC server: runs are started with StartRun (or directly through
 * the returned controller by `rlaif train`), and weights go out over the bus.
 */
import type { Bus } from "../core/src/bus/bus.js";
import { defaultConfig, type RunSettings } from "../core/src/config/settings.js";
import type { GrpcSecurity } from "../core/src/grpc/credentials.js";
import { implement, type RunningServer, startServer } from "../core/src/grpc/server.js";
import { type BackendName, describeBackend, startBackend } from "../core/src/model/backend.js";
import type { ModelConfig, ModelKind } from "../core/src/model/causal-lm.js";
import { heldOutPrompts } from "../core/src/model/corpus.js";
import { loadModelInfo } from "../core/src/model/model-source.js";
import { WeightsPublisher } from "../core/src/weights/weights-publisher.js";
import { loadSigningKey } from "../core/src/weights/weights-signing.js";
import { resumeUnfinishedRun } from "./auto-resume.js";
import { ThreadLearner } from "./learner-thread.js";
import { OptimizerService, optimizerService } from "./optimizer-service.js";
import { ReinforceLearner } from "./reinforce-learner.js";
import { RunController } from "./run-controller.js";

/** Held-out corpus prompts a run uses when its config lists none. */
export const DEFAULT_PROMPT_COUNT = 256;

/** Options of an Optimizer server. */
export interface OptimizerServerOptions {
  host?: string;
  port: number;
  /** TLS/mTLS (and for the Optimizer the control token) of its gRPC server; default plaintext. */
  security?: GrpcSecurity;
  bus: Bus;
  /** Checkpoint every run starts from. */
  checkpoint: string;
  /** Defaults for fields a StartRun leaves unset. */
  settings: RunSettings;
  outDir: string;
  stepTimeoutMs: number;
  backend: "auto" | BackendName;
  /** Where updates compute (`services.learnerIn`): a worker thread of their own, or this thread. */
  learnerIn: "thread" | "main";
  /** PEM file of the Ed25519 private key that signs each weights manifest (empty/absent: unsigned). */
  weightsSigningKey?: string;
  /** Weights versions kept in the Object Store after each publish (absent: the setting's default). */
  weightsRetention?: number;
  /** Every how many versions a full one is published, deltas between (absent: the setting's default). */
  weightsFullEvery?: number;
  mode: string;
  /**
   * What each run's config.json records about its surroundings: the bus ("embedded" or the NATS
   * URL) and the FeedbackService, where this process knows it ("" otherwise), and whether that
   * is the built-in scorer started in this same process.
   */
  provenance?: { bus: string; feedbackAddress: string; feedbackInProcess: boolean };
  /**
   * Before serving, resume the run under `outDir` that this Optimizer's process was training
   * when it died (auto-resume.ts), so a restarted process picks its run up by itself.
   */
  resumeUnfinished?: boolean;
  log?: (line: string) => void;
}

/** A running Optimizer server. */
export interface OptimizerServer {
  server: RunningServer;
  runs: RunController;
  close(): Promise<void>;
}

/** Start the Optimizer. */
export async function startOptimizerServer(opts: OptimizerServerOptions): Promise<OptimizerServer> {
  // Before the backend: a wrong key path is a one-line fix. One publisher for every run of this
  // process, so it knows its own last version even when someone else moved the pointer.
  const signer = opts.weightsSigningKey ? await loadSigningKey(opts.weightsSigningKey) : undefined;
  const weights = new WeightsPublisher({
    ...(signer ? { signer } : {}),
    retention: opts.weightsRetention ?? defaultConfig().services.weightsRetention,
    fullEvery: opts.weightsFullEvery ?? defaultConfig().services.weightsFullEvery,
    ...(opts.log ? { log: opts.log } : {}),
  });
  opts.log?.(
    signer
      ? `optimizer: signing weights with key ${signer.keyId}`
      : "optimizer: no weights signing key: publishing unsigned weights",
  );
  const backend = await startBackend(opts.backend);
  opts.log?.(`optimizer: compute backend ${describeBackend()}`);
  const logOpt = opts.log ? { log: opts.log } : {};
  // The model of the starting checkpoint, read once on the first resume request.
  let starting: Promise<{ kind: ModelKind; config: ModelConfig }> | null = null;
  const model = () => {
    starting ??= loadModelInfo(opts.checkpoint);
    return starting;
  };
  const runs = new RunController({
    bus: opts.bus,
    weights,
    newLearner: (settings, resumeFrom) => {
      const checkpoint = resumeFrom ?? opts.checkpoint;
      return opts.learnerIn === "thread"
        ? ThreadLearner.start({ checkpoint, settings, resume: !!resumeFrom, backend: opts.backend })
        : ReinforceLearner.fromCheckpoint(checkpoint, settings, { resume: !!resumeFrom });
    },
    outDir: opts.outDir,
    stepTimeoutMs: opts.stepTimeoutMs,
    defaultPrompts: () => heldOutPrompts(DEFAULT_PROMPT_COUNT, opts.settings.seed),
    mode: opts.mode,
    provenance: {
      checkpoint: opts.checkpoint,
      backend,
      mode: opts.mode,
      bus: opts.provenance?.bus ?? "",
      feedbackAddress: opts.provenance?.feedbackAddress ?? "",
      feedbackInProcess: opts.provenance?.feedbackInProcess ?? false,
    },
    ...(opts.log ? { log: opts.log } : {}),
  });
  // Before the server listens: whoever asks for the run once it answers finds it running.
  let stopping = false;
  const ended = await runs.loadEnded();
  if (ended > 0) opts.log?.(`optimizer: ${ended} ended run(s) under ${opts.outDir} are listed`);
  if (opts.resumeUnfinished)
    await resumeUnfinishedRun(runs, { outDir: opts.outDir, checkpoint: opts.checkpoint, ...logOpt });
  const server = await startServer({
    ...(opts.host ? { host: opts.host } : {}),
    port: opts.port,
    services: [
      implement(
        OptimizerService,
        optimizerService(runs, opts.settings, { model, stopping: () => stopping, ...logOpt }),
      ),
    ],
    ...(opts.security ? { security: opts.security } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  }).catch(async (err: unknown) => {
    await runs.dispose();
    throw err;
  });
  return {
    server,
    runs,
    async close() {
      // Together: the run stops at its next step boundary (resumable) while the server stops
      // taking calls; the watches of the stopped run end UNAVAILABLE, and the server closes.
      stopping = true;
      await Promise.all([server.shutdown(2000), runs.dispose()]);
    },
  };
}
