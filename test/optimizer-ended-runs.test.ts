/**
 * Runs that ended before an Optimizer started: after a restart on the same output directory,
 * GetStatus, ListRuns and WatchMetrics answer for them from their ended.json and metrics.jsonl
 * (state, step, summary, recorded history), and the calls that would change them are refused or
 * leave them as they were. An ended.json of an older version (no summary) still lists its run.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { runConfigFromSettings } from "../services/core/src/config/run-config.js";
import { RpcError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { loadEndedRuns, RUN_END_FILE, readEndedRun } from "../services/optimizer/ended-runs.js";
import { OptimizerService } from "../services/optimizer/optimizer-service.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

async function code(call: Promise<unknown>): Promise<number | undefined> {
  const err = await call.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, "the call should fail").toBeInstanceOf(RpcError);
  return (err as RpcError).code;
}

describe("optimizer ended runs", () => {
  it("ended runs - a restarted Optimizer reports the runs that ended before it: status, list, recorded metrics", async () => {
    const start = await writeTinyCheckpoint(9);
    const config = tinyRunConfig(start, { steps: 2, checkpointEvery: 1, seed: 5 });
    const runConfig = runConfigFromSettings(config.run);

    // First life: one run succeeds, one is cancelled after its first step.
    const first = await startEmbeddedCluster(config);
    let before: { summary: unknown; metrics: unknown[] };
    try {
      const oc = createClient(OptimizerService, first.optimizer.server.address, { defaultTimeoutMs: 30_000 });
      await oc.startRun({ config: runConfig, runId: "done" });
      expect(await first.optimizer.runs.get("done").done).not.toBeNull();
      const s = await oc.getStatus({ runId: "done" });
      const metrics: unknown[] = [];
      for await (const m of oc.watchMetrics({ runId: "done" })) metrics.push(m.metrics);
      before = { summary: s.summary, metrics };
      await oc.startRun({ config: { ...runConfig, steps: 3 }, runId: "stopped" });
      const run = first.optimizer.runs.get("stopped");
      run.watchers.add((m) => {
        if (m && Number(m.step) === 1) void first.optimizer.runs.cancel("stopped");
      });
      await run.done;
      oc.close();
    } finally {
      await first.close();
    }

    // Second life on the same output directory.
    const second = await startEmbeddedCluster(config);
    const oc = createClient(OptimizerService, second.optimizer.server.address, { defaultTimeoutMs: 30_000 });
    try {
      const done = await oc.getStatus({ runId: "done" });
      expect([done.runId, done.state, done.step, done.error]).toEqual(["done", RunState.SUCCEEDED, 2, ""]);
      expect(done.summary).toEqual(before.summary);
      expect(done.summary?.steps).toBe(2);
      expect(done.lastMetrics).toEqual(before.metrics.at(-1));

      const stopped = await oc.getStatus({ runId: "stopped" });
      expect([stopped.state, stopped.step]).toEqual([RunState.CANCELLED, 1]);
      expect(stopped.summary).toBeUndefined();
      // The most recent run, for an empty id: the one that ended last.
      expect((await oc.getStatus({})).runId).toBe("stopped");

      const list = await oc.listRuns({});
      expect(list.runs.map((r) => [r.runId, r.state, r.step, r.steps])).toEqual([
        ["stopped", RunState.CANCELLED, 1, 3],
        ["done", RunState.SUCCEEDED, 2, 2],
      ]);
      expect(list.runs.every((r) => r.startedUnixMs > 0n)).toBe(true);

      const replay: unknown[] = [];
      for await (const m of oc.watchMetrics({ runId: "done" })) replay.push(m.metrics);
      expect(replay).toEqual(before.metrics);
      const from2: number[] = [];
      for await (const m of oc.watchMetrics({ runId: "done", fromStep: 2 }))
        from2.push(Number(m.metrics?.step));
      expect(from2).toEqual([2]);

      // An ended run is left as it was, and cannot be paused, checkpointed or started again.
      expect(await oc.cancelRun({ runId: "done" })).toMatchObject({ state: RunState.SUCCEEDED, step: 2 });
      expect(await code(oc.pauseRun({ runId: "done" }))).toBe(status.FAILED_PRECONDITION);
      expect(await code(oc.checkpoint({ runId: "done" }))).toBe(status.FAILED_PRECONDITION);
      expect(await code(oc.startRun({ config: runConfig, runId: "done" }))).toBe(status.FAILED_PRECONDITION);
      expect(await code(oc.getStatus({ runId: "never" }))).toBe(status.NOT_FOUND);
    } finally {
      oc.close();
      await second.close();
    }
  }, 180_000);

  it("ended runs - an old ended.json without summary is read, an unreadable one is skipped with its reason", async () => {
    const out = mkdtempSync(join(tmpdir(), "rlaif-ended-"));
    const old = join(out, "old");
    mkdirSync(old);
    writeFileSync(join(old, "config.json"), JSON.stringify({ runId: "old", steps: 7 }));
    writeFileSync(
      join(old, RUN_END_FILE),
      JSON.stringify({ state: "FAILED", step: 3, error: "boom", endedUnixMs: 5 }),
    );
    expect(readEndedRun(old)).toMatchObject({
      runId: "old",
      state: RunState.FAILED,
      step: 3,
      steps: 7,
      error: "boom",
      startedUnixMs: 5,
      summary: null,
    });
    const bad = join(out, "bad");
    mkdirSync(bad);
    writeFileSync(join(bad, "config.json"), JSON.stringify({ runId: "bad" }));
    writeFileSync(join(bad, RUN_END_FILE), JSON.stringify({ state: "RUNNING", step: 1 }));
    const lines: string[] = [];
    const runs = await loadEndedRuns(out, (l) => lines.push(l));
    expect(runs.map((r) => r.runId)).toEqual(["old"]);
    expect(lines).toEqual([
      `optimizer: not listing the ended run in ${bad}: ended.json: state "RUNNING" is not an end state`,
    ]);
  });
});
