/**
 * Starts the Feedback service as a gRPC server (health and reflection included), on its own or
 * inside the embedded cluster.
 */
import type { ServiceSettings } from "../core/src/config/settings.js";
import { ConfigError } from "../core/src/errors.js";
import type { GrpcSecurity } from "../core/src/grpc/credentials.js";
import { implement, type RunningServer, startServer } from "../core/src/grpc/server.js";
import { compositeScorer } from "./composite-scorer.js";
import { FeedbackService, type ItemScorer, ruleScorer, scorerFeedbackService } from "./feedback-service.js";
import { judgeOptionsFrom, judgeScorer } from "./judge-scorer.js";

/**
 * The scorer the settings name: the LLM judge (`--judge-url`), a learned reward model
 * (`--reward-model`), or the weighted rules (`--feedback-rules`, default AFINN). One place, so
 * `rlaif serve feedback` and the embedded cluster choose alike; naming two scorers is a
 * ConfigError rather than one silently winning.
 */
export async function scorerFromSettings(s: ServiceSettings): Promise<ItemScorer> {
  if (s.judgeUrl && s.rewardModel) {
    throw new ConfigError("--judge-url and --reward-model each name the scorer to serve: give one of them");
  }
  if (s.judgeUrl) return judgeScorer(judgeOptionsFrom(s));
  // Imported only here: the reward model needs tfjs, which a rule or judge scorer never loads.
  if (s.rewardModel)
    return (await import("./reward-model-scorer.js")).rewardModelScorer(s.rewardModel, s.backend);
  return compositeScorer(s.feedbackRules);
}

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
