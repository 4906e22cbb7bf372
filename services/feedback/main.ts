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
import { mixedScorer, type WeightedScorer } from "./mixed-scorer.js";

/**
 * The scorer the settings name: the LLM judge (`--judge-url`), a learned reward model
 * (`--reward-model`) and the weighted rules (`--feedback-rules`), each with its weight
 * (`--judge-weight`, `--reward-model-weight`; the rules carry theirs in the spec), combined into
 * one scorer "composite" (mixed-scorer.ts) when more than one is named. The rules take part when
 * no model scorer is named (AFINN by default, as always) or when `--feedback-rules` is given
 * beside one; a scorer named alone with weight 1 is served as itself. One place, so
 * `rlaif serve feedback` and the embedded cluster choose alike.
 */
export async function scorerFromSettings(s: ServiceSettings): Promise<ItemScorer> {
  const weights = [
    ["--judge-weight", s.judgeUrl, s.judgeWeight],
    ["--reward-model-weight", s.rewardModel, s.rewardModelWeight],
  ] as const;
  for (const [flag, named, weight] of weights) {
    if (named && weight === 0) {
      throw new ConfigError(`${flag} is 0: give a non-zero weight, or leave that scorer out`);
    }
  }
  const parts: WeightedScorer[] = [];
  if (s.judgeUrl) parts.push({ scorer: judgeScorer(judgeOptionsFrom(s)), weight: s.judgeWeight });
  if (s.rewardModel) {
    // Imported only here: the reward model needs tfjs, which a rule or judge scorer never loads.
    const { rewardModelScorer } = await import("./reward-model-scorer.js");
    parts.push({ scorer: await rewardModelScorer(s.rewardModel, s.backend), weight: s.rewardModelWeight });
  }
  if (parts.length === 0 || s.feedbackRules.trim() !== "") {
    parts.push({ scorer: compositeScorer(s.feedbackRules), weight: 1 });
  }
  return mixedScorer(parts);
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
