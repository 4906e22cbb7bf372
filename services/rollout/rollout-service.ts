/**
 * rlaif.rollout.v1.RolloutService handlers: Collect runs the same pipeline as the queue worker
 * for an ad-hoc batch (without publishing), GetStatus reports the worker's counters.
 */
import { RolloutService } from "../core/gen/rlaif/rollout/v1/rollout_pb.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
import { collectPrompt, type PolicyCaller } from "./collect.js";
import type { RolloutCounters } from "./rollout-worker.js";
import type { ScorerGuard } from "./scorer-guard.js";

/** What the handlers need. */
export interface RolloutServiceDeps {
  policy: PolicyCaller;
  /** The Feedback client behind its guard (the worker's, so both share one circuit breaker). */
  scorer: ScorerGuard;
  policyAddress: string;
  feedbackAddress: string;
  /** Counters of the queue worker (all zero when this process runs no worker). */
  counters: RolloutCounters;
}

/** The RolloutService handlers. */
export function rolloutService(deps: RolloutServiceDeps): ServiceImpl<typeof RolloutService> {
  return {
    async collect(req, ctx) {
      const timeoutMs = Math.max(1, Math.min(ctx.timeRemainingMs(), 600_000));
      const groups = await Promise.all(
        req.prompts.map((prompt, index) =>
          collectPrompt(
            deps.policy,
            deps.scorer,
            {
              runId: "collect",
              step: 0,
              index,
              prompt,
              samples: req.samplesPerPrompt || 1,
              sampling: req.sampling ?? {},
              minWeightsVersion: 0,
              ...(ctx.metadata.traceparent ? { traceparent: ctx.metadata.traceparent } : {}),
            },
            timeoutMs,
          ),
        ),
      );
      return { trajectories: groups.flat() };
    },

    getStatus() {
      const c = deps.counters;
      return {
        jobsCompleted: BigInt(c.jobsCompleted),
        trajectoriesPublished: BigInt(c.trajectoriesPublished),
        jobsFailed: BigInt(c.jobsFailed),
        lastWeightsVersion: BigInt(c.lastWeightsVersion),
        policyAddress: deps.policyAddress,
        feedbackAddress: deps.feedbackAddress,
      };
    },
  };
}

export { RolloutService };
