/**
 * What a client following a run (`rlaif up`, `rlaif run`) does when the Optimizer's stream drops:
 * say why (the Optimizer died and is being restarted, or is unreachable), wait for an Optimizer
 * to answer at the same address again, and go on following the SAME run id there — a restarted
 * Optimizer with `--resume-unfinished` has resumed it from its last checkpoint. Why its own
 * module: the reconnect rules (which failures are a drop, how long to wait, when the run is
 * gone) are the same for every command that follows a remote run.
 */
import { status } from "@grpc/grpc-js";
import type { GetStatusResponse } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { RlaifError, RpcError, RunFailedError } from "../core/src/errors.js";
import type { OptimizerClient } from "./remote-run.js";

/** How a follower rejoins its run after the stream dropped. */
export interface Rejoin {
  /** Why the stream dropped, in words for the log ("the Optimizer (pid 12) died …; restarting"). */
  explain(err: RpcError): Promise<string>;
  /** Longest wait for the Optimizer to answer again. */
  waitMs: number;
  log(line: string): void;
  /** Rejects when waiting is pointless (the Optimizer's supervisor gave up). */
  abandoned?: Promise<never>;
  /** Aborted when the follower itself is stopping: a drop then is the end, not a restart. */
  signal?: AbortSignal;
}

/** How long a follower waits for the Optimizer to come back: a model load and some restarts. */
export const REJOIN_WAIT_MS = 300_000;

/** Between two GetStatus tries while the Optimizer is away. */
const POLL_MS = 1000;

/**
 * Whether a failed call means the connection to the Optimizer went away (its process died or
 * shut down), rather than a refusal: UNAVAILABLE ("Connection dropped"), CANCELLED by the server
 * side closing, or INTERNAL for a stream reset mid-flight.
 */
export function isConnectionDrop(err: unknown): err is RpcError {
  if (!(err instanceof RpcError)) return false;
  if (err.code === status.UNAVAILABLE || err.code === status.CANCELLED) return true;
  return err.code === status.INTERNAL && /RST_STREAM|connection|closed/i.test(err.details);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * After `drop`: log why, then poll GetStatus for `runId` until an Optimizer answers (within
 * `rejoin.waitMs`) and resolve with the run's status there. RunFailedError when the Optimizer
 * came back without the run (not resumed: see the Optimizer's log); RlaifError when it did not
 * come back in time; the `abandoned` error when its supervisor gave up.
 */
export async function rejoinRun(
  optimizer: OptimizerClient,
  runId: string,
  rejoin: Rejoin,
  drop: RpcError,
): Promise<GetStatusResponse> {
  if (rejoin.signal?.aborted) throw drop;
  rejoin.log(
    `${await rejoin.explain(drop)}; waiting up to ${rejoin.waitMs / 1000} s to follow run ${runId} again`,
  );
  const deadline = Date.now() + rejoin.waitMs;
  let last: unknown = drop;
  while (Date.now() < deadline) {
    try {
      const s = await optimizer.getStatus({ runId }, { timeoutMs: 5000 });
      rejoin.log(`run ${runId} is back: ${RunState[s.state]} at step ${s.step}; following it again`);
      return s;
    } catch (err) {
      if (err instanceof RpcError && err.code === status.NOT_FOUND) {
        throw new RunFailedError(
          `run ${runId} is gone: the Optimizer came back without it. A restarted Optimizer resumes a run by itself only with --resume-unfinished: from its newest step checkpoint (written every --checkpoint-every steps), or from step 0 when it wrote none yet; the checkpoint could not be read, was of another model, or the starting checkpoint changed (see the Optimizer's log)`,
          { cause: err },
        );
      }
      if (!isConnectionDrop(err) && !(err instanceof RpcError && err.code === status.DEADLINE_EXCEEDED))
        throw err;
      last = err;
    }
    await Promise.race([sleep(POLL_MS), ...(rejoin.abandoned ? [rejoin.abandoned] : [])]);
  }
  throw new RlaifError(
    `the Optimizer did not come back within ${rejoin.waitMs / 1000} s to continue run ${runId}: ${(last as Error).message}`,
    { cause: last },
  );
}
