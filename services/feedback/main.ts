/**
 * Starts the Feedback service as a gRPC server (health and reflection included), on its own or
 * inside the embedded cluster.
 */
import type { GrpcSecurity } from "../core/src/grpc/credentials.js";
import { implement, type RunningServer, startServer } from "../core/src/grpc/server.js";
import { FeedbackService, ruleFeedbackService } from "./feedback-service.js";

/** Where to listen. */
export interface FeedbackServerOptions {
  host?: string;
  port: number;
  /** TLS/mTLS (and for the Optimizer the control token) of its gRPC server; default plaintext. */
  security?: GrpcSecurity;
  log?: (line: string) => void;
}

/** Serve the built-in rule scorer. */
export function startFeedbackServer(opts: FeedbackServerOptions): Promise<RunningServer> {
  return startServer({
    ...(opts.host ? { host: opts.host } : {}),
    port: opts.port,
    services: [implement(FeedbackService, ruleFeedbackService())],
    ...(opts.security ? { security: opts.security } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  });
}
