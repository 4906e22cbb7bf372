/**
 * Starts the Feedback service as a gRPC server (health and reflection included), on its own or
 * inside the embedded cluster.
 */
import type { GrpcSecurity } from "../core/src/grpc/credentials.js";
import { implement, type RunningServer, startServer } from "../core/src/grpc/server.js";
import { FeedbackService, type ItemScorer, ruleScorer, scorerFeedbackService } from "./feedback-service.js";

/** Where to listen, and what to serve. */
export interface FeedbackServerOptions {
  host?: string;
  port: number;
  /** The in-process scorer to serve; default the built-in rule scorer. */
  scorer?: ItemScorer;
  /** TLS/mTLS (and for the Optimizer the control token) of its gRPC server; default plaintext. */
  security?: GrpcSecurity;
  log?: (line: string) => void;
}

/** Serve an in-process scorer (the built-in rule scorer unless `opts.scorer` says otherwise). */
export function startFeedbackServer(opts: FeedbackServerOptions): Promise<RunningServer> {
  return startServer({
    ...(opts.host ? { host: opts.host } : {}),
    port: opts.port,
    services: [implement(FeedbackService, scorerFeedbackService(opts.scorer ?? ruleScorer()))],
    ...(opts.security ? { security: opts.security } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  });
}
