/**
 * Starts a Policy replica as a gRPC server: loads the checkpoint, and with a bus follows the
 * latest-weights pointer so new versions are fetched, verified and swapped in between requests.
 */

import { PolicyService } from "../core/gen/rlaif/policy/v1/policy_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import { defaultConfig } from "../core/src/config/settings.js";
import type { GrpcSecurity } from "../core/src/grpc/credentials.js";
import { implement, type RunningServer, startServer } from "../core/src/grpc/server.js";
import { type BackendName, describeBackend, startBackend } from "../core/src/model/backend.js";
import { isModelDir } from "../core/src/model/model-source.js";
import { observeAtScrape } from "../core/src/ops/metrics.js";
import type { StartPhase } from "../core/src/ops/start-phases.js";
import { loadVerifyKey } from "../core/src/weights/weights-signing.js";
import { type OpenAiHttpOptions, type OpenAiHttpServer, startOpenAiServer } from "./openai-http.js";
import { createPolicyModelLoader } from "./policy-model.js";
import { PolicyReplica } from "./policy-replica.js";
import { policyService } from "./policy-service.js";

/** Options of a Policy server. */
export interface PolicyServerOptions {
  host?: string;
  port: number;
  /** TLS/mTLS (and for the Optimizer the control token) of its gRPC server; default plaintext. */
  security?: GrpcSecurity;
  /** Checkpoint served until the first published version arrives. */
  checkpoint: string;
  /** Without a bus the replica serves the checkpoint only. */
  bus?: Bus;
  backend: "auto" | BackendName;
  /** Most rows decoded together (default: the `services.policyBatchRows` setting's). */
  batchRows?: number;
  /** Most rows queued beyond one batch before RESOURCE_EXHAUSTED (default: `services.policyQueueRows`'s). */
  queueRows?: number;
  /**
   * PEM file of the Optimizer's Ed25519 public key (`services.weightsVerifyKey`): with it, weights
   * not signed by that key are refused. Empty or absent: unsigned weights are taken (with a warning).
   */
  weightsVerifyKey?: string;
  /**
   * The OpenAI-compatible HTTP API (openai-http.ts) on its own port, on `host` as the gRPC server;
   * absent = not served. Its calls go through the same handlers, so they share batches with gRPC's.
   */
  openai?: Omit<OpenAiHttpOptions, "host" | "log">;
  log?: (line: string) => void;
  /**
   * Called as the start passes `backend`, `model` and (with a bus and published weights)
   * `weights`: `rlaif serve` logs them as the cold start's phases (start-phases.ts).
   */
  onPhase?: (phase: StartPhase) => void;
}

/** A running Policy server and its replica. */
export interface PolicyServer {
  server: RunningServer;
  replica: PolicyReplica;
  /** The OpenAI HTTP API, when `openai` was given. */
  openai?: OpenAiHttpServer;
  close(): Promise<void>;
}

/** Start a Policy replica. */
export async function startPolicyServer(opts: PolicyServerOptions): Promise<PolicyServer> {
  // Before the backend and the model: a wrong key path is a one-line fix.
  const verifier = opts.weightsVerifyKey ? await loadVerifyKey(opts.weightsVerifyKey) : undefined;
  await startBackend(opts.backend);
  opts.onPhase?.("backend");
  opts.log?.(`policy: compute backend ${describeBackend()}`);
  const defaults = defaultConfig().services;
  const limits = {
    batchRows: opts.batchRows ?? defaults.policyBatchRows,
    queueRows: opts.queueRows ?? defaults.policyQueueRows,
  };
  const loader = createPolicyModelLoader({ batchRows: limits.batchRows });
  const first =
    loader.fromDir && isModelDir(opts.checkpoint)
      ? await loader.fromDir(opts.checkpoint)
      : loader.fromFile(opts.checkpoint);
  opts.onPhase?.("model");
  const replica = new PolicyReplica(first, loader, opts.log, verifier ? { verifier } : {});
  if (opts.bus) {
    opts.log?.(
      verifier
        ? `policy: taking only weights signed by key ${verifier.keyId}`
        : "policy: no weights verify key: taking unsigned weights (anyone who can write to NATS can replace them)",
    );
    // Resolves once the weights published before this start are served (or refused), so the
    // server below never reports SERVING with an older version than the run's.
    if (await replica.follow(opts.bus)) opts.onPhase?.("weights");
  }
  const handlers = policyService(replica, limits);
  const server = await startServer({
    ...(opts.host ? { host: opts.host } : {}),
    port: opts.port,
    services: [implement(PolicyService, handlers)],
    ...(opts.security ? { security: opts.security } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  });
  const unobserve = observeAtScrape("policyVersion", () => [
    [{ replica: server.address }, replica.serving.version],
  ]);
  const promptTokens = (text: string) =>
    replica.withModels(async ({ model }) => model.tokenizer.encode(text).length);
  const openai = opts.openai
    ? await startOpenAiServer(
        { ...handlers, promptTokens },
        { ...opts.openai, ...(opts.host ? { host: opts.host } : {}), ...(opts.log ? { log: opts.log } : {}) },
      ).catch(async (err: unknown) => {
        await server.shutdown(0);
        await replica.close();
        throw err;
      })
    : undefined;
  return {
    server,
    replica,
    ...(openai ? { openai } : {}),
    async close() {
      await Promise.all([openai?.close(2000), server.shutdown(2000)]);
      unobserve();
      await replica.close();
    },
  };
}
