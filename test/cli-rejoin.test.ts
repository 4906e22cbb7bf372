/**
 * How a follower rejoins its run after the Optimizer's stream dropped (rejoin-run.ts): it finds
 * the run again where an Optimizer answers, is told plainly when the Optimizer came back without
 * the run or did not come back in time, and does not wait when it is stopping itself or the
 * Optimizer's supervisor gave up.
 */
import { createServer } from "node:net";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isConnectionDrop, type Rejoin, rejoinRun } from "../services/cli/rejoin-run.js";
import { connectOptimizer, type OptimizerClient } from "../services/cli/remote-run.js";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { RlaifError, RpcError, RunFailedError, ServiceFailedError } from "../services/core/src/errors.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const DROP = new RpcError(status.UNAVAILABLE, "Connection dropped", { method: "WatchMetrics" });

function rejoin(lines: string[], extra: Partial<Rejoin> = {}): Rejoin {
  return { waitMs: 20_000, log: (l) => lines.push(l), explain: async () => "the Optimizer died", ...extra };
}

/** A loopback port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe("cli rejoin", () => {
  let cluster: EmbeddedCluster;
  let optimizer: OptimizerClient;
  let runId: string;
  beforeAll(async () => {
    const config = tinyRunConfig(await writeTinyCheckpoint(), { steps: 1 });
    cluster = await startEmbeddedCluster(config);
    const run = await cluster.optimizer.runs.start(config.run);
    await run.done;
    runId = run.runId;
    optimizer = connectOptimizer(cluster.optimizer.server.address, 10_000);
  }, 60_000);
  afterAll(async () => {
    optimizer?.close();
    await cluster?.close();
  });

  it("rejoin - which failures are a dropped connection", () => {
    expect(isConnectionDrop(DROP)).toBe(true);
    expect(isConnectionDrop(new RpcError(status.CANCELLED, "Call cancelled"))).toBe(true);
    expect(isConnectionDrop(new RpcError(status.INTERNAL, "Received RST_STREAM with code 2"))).toBe(true);
    expect(isConnectionDrop(new RpcError(status.INTERNAL, "bad payload"))).toBe(false);
    expect(isConnectionDrop(new RpcError(status.NOT_FOUND, "no run"))).toBe(false);
    expect(isConnectionDrop(new Error("UNAVAILABLE"))).toBe(false);
  });

  it("rejoin - the run is found again where an Optimizer answers, after saying why it is waited for", async () => {
    const lines: string[] = [];
    const s = await rejoinRun(optimizer, runId, rejoin(lines), DROP);
    expect(s.state).toBe(RunState.SUCCEEDED);
    expect(lines).toEqual([
      `the Optimizer died; waiting up to 20 s to follow run ${runId} again`,
      `run ${runId} is back: SUCCEEDED at step 1; following it again`,
    ]);
  });

  it("rejoin - an Optimizer that came back without the run is a RunFailedError saying why", async () => {
    const err = await rejoinRun(optimizer, "run-that-was-lost", rejoin([]), DROP).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunFailedError);
    expect((err as Error).message).toMatch(
      /^run run-that-was-lost is gone: the Optimizer came back without it\. .*--resume-unfinished.*--checkpoint-every/,
    );
  });

  it("rejoin - an Optimizer that does not come back in time, a supervisor that gave up, a follower stopping", async () => {
    const nobody = connectOptimizer(`127.0.0.1:${await deadPort()}`, 1000);
    try {
      const late = await rejoinRun(nobody, runId, rejoin([], { waitMs: 1500 }), DROP).catch(
        (e: unknown) => e,
      );
      expect(late).toBeInstanceOf(RlaifError);
      expect((late as Error).message).toMatch(
        new RegExp(`^the Optimizer did not come back within 1.5 s to continue run ${runId}: .*UNAVAILABLE`),
      );
      const gaveUp = new ServiceFailedError("optimizer", "optimizer keeps exiting");
      const abandoned = Promise.reject(gaveUp);
      abandoned.catch(() => undefined);
      await expect(rejoinRun(nobody, runId, rejoin([], { abandoned }), DROP)).rejects.toBe(gaveUp);
      const stop = new AbortController();
      stop.abort();
      const lines: string[] = [];
      await expect(rejoinRun(nobody, runId, rejoin(lines, { signal: stop.signal }), DROP)).rejects.toBe(DROP);
      expect(lines).toEqual([]);
    } finally {
      nobody.close();
    }
  });
});
