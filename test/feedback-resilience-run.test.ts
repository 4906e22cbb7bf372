/**
 * Training runs (embedded cluster, tiny model) against REAL misbehaving gRPC scorers: a scorer
 * that hangs on one prompt has that prompt's samples failed after its attempts and excluded,
 * counted in the step metrics and the run summary, and the run goes on; one that answers NaN on
 * most prompts fails the run past max-excluded-share; one whose circuit opens fails the run with
 * "no scorer is left".
 */
import { afterEach, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import type { RlaifConfig } from "../services/core/src/config/settings.js";
import {
  type MisbehavingFeedback,
  type MisbehavingOptions,
  startMisbehavingFeedback,
} from "./helpers/misbehaving-feedback.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An embedded cluster scored by a misbehaving server; `services` and `run` override the tiny config. */
async function clusterAgainst(
  server: MisbehavingOptions,
  services: Partial<RlaifConfig["services"]>,
  run: Partial<RlaifConfig["run"]> = {},
): Promise<{ cluster: EmbeddedCluster; fb: MisbehavingFeedback; config: RlaifConfig; logs: string[] }> {
  const fb = await startMisbehavingFeedback(server);
  cleanups.push(() => fb.close());
  const config = tinyRunConfig(await writeTinyCheckpoint(), run);
  Object.assign(config.services, { feedbackAddress: fb.address, ...services });
  const logs: string[] = [];
  const cluster = await startEmbeddedCluster(config, (l) => logs.push(l));
  cleanups.push(() => cluster.close());
  return { cluster, fb, config, logs };
}

/** Each step's wall time in seconds, from the cumulative wall time of the metrics. */
function stepSeconds(history: readonly { wallSeconds: number }[]): number[] {
  return history.map((m, i) => m.wallSeconds - (history[i - 1]?.wallSeconds ?? 0));
}

describe("feedback resilience run", () => {
  it("feedback resilience run - a scorer hung on one prompt: its samples fail after 2 attempts, excluded and counted, the run goes on", async () => {
    const hungPrompt = "It is a";
    const { cluster, config } = await clusterAgainst(
      { mode: "hang", only: (p) => p === hungPrompt },
      { feedbackTimeoutMs: 400, scorerAttempts: 2, scorerBackoffMs: 50 },
    );
    const run = await cluster.optimizer.runs.start(config.run);
    const summary = await run.done;
    expect(run.error).toBe("");
    const history = run.driver.history;
    expect(history).toHaveLength(3);
    for (const m of history) {
      expect(m.excludedByCause).toEqual({ scorer_error: 2 });
      expect(m.excluded).toBe(2);
    }
    expect(summary?.scorerErrors).toBe(6);
    expect(summary?.trajectories).toBe(18);
    const walls = stepSeconds(history);
    // a hung job costs 2 deadlines and one backoff (≤ 0.85 s), never the retry budget (30 s)
    for (const w of walls) expect(w).toBeLessThan(20);
    console.log(`hung scorer (2 × 400 ms): step wall ${walls.map((w) => w.toFixed(2)).join(", ")} s`);
  }, 120_000);

  it("feedback resilience run - NaN on 3 of 4 prompts excludes 6 of 8 samples: the run fails past max-excluded-share 0.5", async () => {
    const { cluster, config } = await clusterAgainst(
      { mode: "nan", only: (p) => p !== "The film was" },
      { scorerBreakerFailures: 100 },
    );
    const run = await cluster.optimizer.runs.start(config.run);
    expect(await run.done).toBeNull();
    expect(run.error).toMatch(
      /step 1: 6 of 8 samples excluded \(6 scorer_error\), more than max-excluded-share 0\.5 allows; the first error: scorer "rule-afinn165[^"]*" v\S+ answered badly: scores\[\d\]\.reward/,
    );
  }, 120_000);

  it("feedback resilience run - the same scorer under max-excluded-share 0.8 trains on the rest", async () => {
    const { cluster, config } = await clusterAgainst(
      { mode: "nan", only: (p) => p !== "The film was" },
      { scorerBreakerFailures: 100 },
      { maxExcludedShare: 0.8, steps: 2 },
    );
    const run = await cluster.optimizer.runs.start(config.run);
    const summary = await run.done;
    expect(run.error).toBe("");
    expect(summary?.trajectories).toBe(4);
    expect(summary?.scorerErrors).toBe(12);
  }, 120_000);

  it("feedback resilience run - a scorer whose circuit opens fails the run: no scorer is left", async () => {
    const { cluster, config, fb, logs } = await clusterAgainst(
      { mode: "wrong-count" },
      { scorerBreakerFailures: 2, rolloutConcurrency: 1 },
    );
    const run = await cluster.optimizer.runs.start(config.run);
    expect(await run.done).toBeNull();
    expect(run.error).toMatch(
      new RegExp(
        `step 1: no scorer is left, no sample could be scored: scorer ${fb.address}: circuit open after 2 consecutive failures`,
      ),
    );
    expect(fb.batches).toHaveLength(2);
    expect(logs.some((l) => l.includes(`scorer ${fb.address} circuit open`))).toBe(true);
  }, 120_000);
});
