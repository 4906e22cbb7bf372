/**
 * Real gRPC FeedbackServices that misbehave on purpose, for the resilience tests: each serves the
 * built-in rule scorer's GetInfo and scores like it, except where its `mode` says otherwise (hang,
 * NaN, the wrong count, per-token rewards of the wrong length), optionally only for some prompts,
 * and with a settable batch limit. It counts calls and batch sizes, so a test can tell what the
 * Rollout really sent.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  FeedbackService,
  type ScoreItem,
  type ScoreResponseSchema,
} from "../../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { RpcError } from "../../services/core/src/errors.js";
import { implement, type RunningServer, startServer } from "../../services/core/src/grpc/server.js";
import { ruleFeedbackService } from "../../services/feedback/feedback-service.js";

/** How a misbehaving scorer answers the items it misbehaves on. */
export type Misbehaviour = "ok" | "hang" | "nan" | "inf" | "wrong-count" | "wrong-length";

/** A running misbehaving scorer. */
export interface MisbehavingFeedback {
  address: string;
  /** Score calls received, and the number of items of each. */
  batches: number[];
  /** GetInfo calls received. */
  infoCalls: number;
  /** Change the behaviour of later calls. */
  mode: Misbehaviour;
  close(): Promise<void>;
}

/** Options of {@link startMisbehavingFeedback}. */
export interface MisbehavingOptions {
  mode: Misbehaviour;
  /** Misbehave only on calls whose first item's prompt this accepts (default: every call). */
  only?: (prompt: string) => boolean;
  /** GetInfo's max_batch_items; larger calls are refused with INVALID_ARGUMENT (default 1024). */
  maxBatchItems?: number;
  /** Listen on this port (default: any free one). */
  port?: number;
}

/** Start a misbehaving FeedbackService on 127.0.0.1. */
export async function startMisbehavingFeedback(opts: MisbehavingOptions): Promise<MisbehavingFeedback> {
  const rules = ruleFeedbackService();
  const limit = opts.maxBatchItems ?? 1024;
  const hung: (() => void)[] = [];
  const state = { batches: [] as number[], infoCalls: 0, mode: opts.mode };
  const server: RunningServer = await startServer({
    host: "127.0.0.1",
    port: opts.port ?? 0,
    services: [
      implement(FeedbackService, {
        async getInfo(req, ctx) {
          state.infoCalls++;
          return { ...(await rules.getInfo(req, ctx)), maxBatchItems: limit };
        },
        async score(req, ctx) {
          state.batches.push(req.items.length);
          if (req.items.length > limit) {
            throw new RpcError(status.INVALID_ARGUMENT, `items: ${req.items.length} items, at most ${limit}`);
          }
          const answer = (await rules.score(req, ctx)) as MessageInitShape<typeof ScoreResponseSchema>;
          const first = req.items[0] as ScoreItem;
          if (opts.only && !opts.only(first.prompt)) return answer;
          return misbehave(state.mode, answer, req.items, hung);
        },
      }),
    ],
  });
  return Object.assign(state, {
    address: server.address,
    async close() {
      for (const wake of hung) wake();
      await server.shutdown(200);
    },
  });
}

/** The answer of a scorer in `mode`, or a call that never ends (until close). */
function misbehave(
  mode: Misbehaviour,
  answer: MessageInitShape<typeof ScoreResponseSchema>,
  items: readonly ScoreItem[],
  hung: (() => void)[],
): MessageInitShape<typeof ScoreResponseSchema> | Promise<never> {
  // plain copies (no message type), so each mode may change any field
  const scores = (answer.scores ?? []).map((x) => ({
    reward: x.reward ?? 0,
    tokenRewards: [...(x.tokenRewards ?? [])],
    rationale: x.rationale ?? "",
    status: x.status ?? 0,
    error: x.error ?? "",
    idempotencyKey: x.idempotencyKey ?? "",
  }));
  const plain = {
    scorerId: answer.scorerId ?? "",
    scorerVersion: answer.scorerVersion ?? "",
    modelHash: answer.modelHash ?? "",
  };
  switch (mode) {
    case "ok":
      return answer;
    case "hang":
      return new Promise<never>((_, reject) => {
        hung.push(() => reject(new RpcError(status.UNAVAILABLE, "shutting down")));
      });
    case "nan":
    case "inf":
      return {
        ...plain,
        scores: scores.map((x) => ({ ...x, reward: mode === "nan" ? Number.NaN : -Infinity })),
      };
    case "wrong-count":
      return { ...plain, scores: scores.slice(1) };
    case "wrong-length":
      return {
        ...plain,
        scores: scores.map((x, i) => ({
          ...x,
          tokenRewards: new Array<number>(Buffer.byteLength((items[i] as ScoreItem).completion) + 1).fill(0),
        })),
      };
  }
}
