/**
 * The pipeline figures of a step's metrics (step-stats.ts, RunDriver.record): excluded samples by
 * cause sum to `excluded`, dropped messages are counted by cause, the staleness histogram sums to
 * the applied samples, queue depths are read at record time, and the busy share and per-worker
 * token rates come from the learner's timed calls and the samples' producers.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type StepMetrics, TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { RunDriver } from "../services/optimizer/run-driver.js";
import {
  BusyClock,
  excludedByCause,
  stalenessHistogram,
  tokensPerSecondByWorker,
} from "../services/optimizer/step-stats.js";
import { failedTrajectories } from "../services/rollout/collect.js";
import { settings, trajectory, useFakeRun } from "./helpers/fake-run.js";

const { setup, rollout } = useFakeRun();

const sampled = (version: number, worker = "", tokens = 3) =>
  create(TrajectorySchema, {
    weightsVersion: BigInt(version),
    rolloutWorker: worker,
    completionTokens: Array(tokens).fill(1),
  });

describe("step metrics", () => {
  it("step metrics - the staleness histogram counts samples per lag and sums to them", () => {
    const trajs = [sampled(5), sampled(4), sampled(4), sampled(6), sampled(1)];
    // lag 0 (5, and 6 newer), lag 1 (4, 4), lag 4 clamped into the last entry (2).
    expect(stalenessHistogram(trajs, 5, 2)).toEqual([2, 2, 1]);
    expect(stalenessHistogram(trajs, 5, 0)).toEqual([5]);
  });

  it("step metrics - excluded by cause names errors, dead-lettered and too-stale samples apart", () => {
    const job = {
      runId: "r",
      step: 1,
      index: 0,
      prompt: "p",
      samples: 2,
      sampling: {},
      minWeightsVersion: 0,
    };
    const arrived = [
      ...failedTrajectories(job, "INVALID_ARGUMENT: too long"),
      ...failedTrajectories({ ...job, index: 1, samples: 1 }, "dead-lettered after 5 deliveries: x"),
      sampled(2),
      sampled(3),
    ];
    expect(excludedByCause(arrived, 3)).toEqual({ error: 2, dead_lettered: 1, too_stale: 1 });
    expect(excludedByCause(arrived, 0)).toEqual({ error: 2, dead_lettered: 1 });
  });

  it("step metrics - samples the scorer abstained on or failed on are counted by their status, not as errors", () => {
    const scored = (scoreStatus: ScoreStatus, error = "") =>
      create(TrajectorySchema, { weightsVersion: 1n, scoreStatus, error });
    const arrived = [
      scored(ScoreStatus.ABSTAIN, "scorer s abstained: not English"),
      scored(ScoreStatus.ERROR, "scorer s failed on this sample: unparseable"),
      scored(ScoreStatus.ERROR, "scorer s failed on this sample: unparseable"),
      scored(ScoreStatus.OK),
      scored(ScoreStatus.UNSPECIFIED),
    ];
    expect(excludedByCause(arrived, 0)).toEqual({ abstained: 1, scorer_error: 2 });
  });

  it("step metrics - tokens per second are split by the worker that produced them", () => {
    const trajs = [sampled(1, "w1", 4), sampled(1, "w1", 2), sampled(1, "w2", 3), sampled(1, "", 1)];
    expect(tokensPerSecondByWorker(trajs, 2)).toEqual({ w1: 3, w2: 1.5, unknown: 0.5 });
  });

  it("step metrics - the busy clock's share is the timed work over the interval", async () => {
    const clock = new BusyClock();
    clock.reset();
    await clock.time(() => new Promise((r) => setTimeout(r, 30)));
    await new Promise((r) => setTimeout(r, 30));
    const lap = clock.lap();
    expect(lap.busyFraction).toBeGreaterThan(0);
    expect(lap.busyFraction).toBeLessThan(1);
    expect(lap.seconds).toBeGreaterThan(0.05);
    // The next interval starts empty.
    expect(clock.lap().busyFraction).toBe(0);
  });

  it("step metrics - a run's metrics account for every sample and every dropped message", async () => {
    const { bus, learner } = setup();
    rollout(bus, {
      skip: (job) => job.index === 1,
      async afterJob(job, publish) {
        const step = Number(job.step);
        if (job.index === 1) {
          const base = {
            runId: job.runId,
            step,
            index: 1,
            prompt: job.prompt,
            sampling: {},
            minWeightsVersion: 0,
          };
          const [failed] = failedTrajectories({ ...base, samples: 1 }, "UNAVAILABLE: scorer down");
          const dead = failedTrajectories({ ...base, samples: 2 }, "dead-lettered after 5 deliveries: x")[1];
          if (failed) await publish(failed, failed.id);
          if (dead) await publish(dead, dead.id);
          return;
        }
        const dup = trajectory(job.runId, step, job.index, 0, 99);
        await publish(dup, `${dup.id}-again`);
        const other = trajectory("run-other", step, job.index, 0);
        await publish(other, other.id);
      },
    });
    const metrics: StepMetrics[] = [];
    const driver = new RunDriver(bus, learner, {
      runId: "run-m",
      settings: settings({ steps: 2 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => metrics.push(m),
    });
    await driver.run();
    expect(metrics).toHaveLength(2);
    for (const m of metrics) {
      expect(m.trajectories).toBe(2);
      expect(m.excluded).toBe(2);
      expect(m.excludedByCause).toEqual({ error: 1, dead_lettered: 1 });
      expect(m.deadLettered).toBe(1);
      expect(Object.values(m.excludedByCause).reduce((a, b) => a + b, 0)).toBe(m.excluded);
      expect(m.stalenessHistogram).toEqual([2]);
      expect(m.droppedByCause.duplicate).toBe(1);
      expect(m.droppedByCause.other_run).toBe(1);
      expect(m.optimizerBusyFraction).toBeGreaterThanOrEqual(0);
      expect(m.optimizerBusyFraction).toBeLessThanOrEqual(1);
      expect(Object.keys(m.rolloutTokensPerSecond)).toEqual(["unknown"]);
      expect(m.rolloutTokensPerSecond.unknown).toBeGreaterThan(0);
      expect(m.queueDepths.trajectories_held).toBe(0);
      expect(m.queueDepths.jobs).toBeGreaterThanOrEqual(0);
      expect(m.queueDepths.trajectories).toBeGreaterThanOrEqual(0);
    }
  });
});
