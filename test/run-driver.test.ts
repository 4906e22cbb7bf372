/**
 * The Optimizer's run loop (RunDriver) on a MemoryBus with a fake Learner and a fake rollout loop
 * in the test: jobs go out per step, exactly that step's trajectories come back and are applied
 * once, what was used is acked, weights versions move the latest pointer every publishEvery
 * steps, a missing trajectory fails the run after stepTimeoutMs, and cancel() stops it.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type StepMetrics,
  StepMetricsSchema,
  TrajectorySchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { OPTIMIZER_CONSUMER, runStateKey } from "../services/core/src/bus/subjects.js";
import { RunCancelledError, RunFailedError } from "../services/core/src/errors.js";
import { readLatestWeights, watchLatestWeights } from "../services/core/src/weights/weights-channel.js";
import { jobSeed, RunDriver } from "../services/optimizer/run-driver.js";
import { failedTrajectories } from "../services/rollout/collect.js";
import { ids, settings, trajectory, useFakeRun } from "./helpers/fake-run.js";

const { cleanups, setup, rollout } = useFakeRun();

describe("run driver", () => {
  it("run driver - queues each step's jobs and applies exactly that step's trajectories", async () => {
    const { bus, learner } = setup();
    const r = rollout(bus);
    const metrics: StepMetrics[] = [];
    const driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 2 }),
      prompts: ["p0", "p1", "p2"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => metrics.push(m),
    });
    const summary = await driver.run();
    expect(learner.steps).toEqual([ids("run-a", 1), ids("run-a", 2)]);
    // Jobs: msgId run.step.index, prompts cycling, G samples, per-job seeds, the version in force.
    expect(r.jobs.map((j) => j.msgId)).toEqual(["run-a.1.0", "run-a.1.1", "run-a.2.0", "run-a.2.1"]);
    expect(r.jobs.map((j) => j.job.prompt)).toEqual(["p0", "p1", "p2", "p0"]);
    for (const { job } of r.jobs) {
      expect(job.runId).toBe("run-a");
      expect(job.samples).toBe(2);
      expect(job.sampling?.maxNewTokens).toBe(5);
      expect(job.sampling?.seed).toBe(BigInt(jobSeed(3, Number(job.step), job.index)));
      expect(job.minWeightsVersion).toBe(job.step === 1 ? 1n : 2n);
    }
    // Metrics of each step, also stored under the run's KV key.
    expect(metrics.map((m) => m.step)).toEqual([1, 2]);
    expect(metrics[0]?.trajectories).toBe(4);
    expect(metrics[0]?.meanReward).toBeCloseTo((0 + 0.1 + 1 + 1.1) / 4, 6);
    expect(metrics[0]?.kl).toBeCloseTo(0.5, 6);
    expect(metrics[0]?.loss).toBe(0.25);
    const stored = await (await bus.kv()).get(runStateKey("run-a"));
    expect(fromBinary(StepMetricsSchema, stored?.value ?? new Uint8Array()).step).toBe(2);
    expect(summary.steps).toBe(2);
    expect(summary.trajectories).toBe(8);
    expect(summary.finalWeightsVersion).toBe(3n);
    expect(summary.mode).toBe("embedded");
    expect(driver.step).toBe(2);
  });

  it("run driver - a skipped update is counted in its step's metrics and in the summary", async () => {
    const { bus, learner } = setup();
    rollout(bus);
    learner.skipAt = new Set([2]);
    const metrics: StepMetrics[] = [];
    const driver = new RunDriver(bus, learner, {
      runId: "run-s",
      settings: settings({ steps: 3 }),
      prompts: ["p0"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => metrics.push(m),
    });
    const summary = await driver.run();
    expect(metrics.map((m) => m.updateSkipped)).toEqual([false, true, false]);
    expect(summary.skippedUpdates).toBe(1);
  });

  it("run driver - applies each trajectory id at most once, ignoring duplicates, other runs and earlier steps", async () => {
    const { bus, learner } = setup();
    rollout(bus, {
      async afterJob(job, publish) {
        const step = Number(job.step);
        // The same trajectory again under another msgId (the bus cannot dedup it), with another reward.
        const dup = trajectory(job.runId, step, job.index, 0, 99);
        await publish(dup, `${dup.id}-again`);
        // Another run's trajectory for the same step and index.
        const other = trajectory("run-other", step, job.index, 0);
        await publish(other, other.id);
        // A step-1 trajectory re-sent during step 2 (already applied).
        if (step === 2) {
          const old = trajectory(job.runId, 1, job.index, 1, 77);
          await publish(old, `${old.id}-late`);
        }
      },
    });
    const driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 3 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
    });
    await driver.run();
    expect(learner.steps).toHaveLength(3);
    learner.steps.forEach((stepIds, i) => {
      expect(new Set(stepIds).size).toBe(stepIds.length);
      expect([...stepIds].sort()).toEqual(ids("run-a", i + 1).sort());
    });
    // Neither another run's nor an earlier step's reward leaked into a step.
    for (const rewards of learner.rewards) expect(rewards.filter((r) => r === 77)).toEqual([]);
    // The first copy of an id is the one applied, never a later duplicate.
    for (const rewards of learner.rewards) expect(rewards.filter((r) => r === 99)).toEqual([]);
  });

  it("run driver - samples marked failed by the Rollout are excluded and counted (dead-lettered ones apart), not waited for", async () => {
    const { bus, learner } = setup();
    rollout(bus, {
      skip: (job) => job.index === 1,
      async afterJob(job, publish) {
        if (job.index !== 1) return;
        for (const t of failedTrajectories(
          {
            runId: job.runId,
            step: Number(job.step),
            index: 1,
            prompt: job.prompt,
            samples: job.samples,
            sampling: {},
            minWeightsVersion: 0,
          },
          Number(job.step) === 2
            ? "dead-lettered after 5 deliveries: Feedback.Score failed"
            : "INVALID_ARGUMENT: prompts[0]: too long",
        )) {
          await publish(t, t.id);
        }
      },
    });
    const metrics: [number, number][] = [];
    const driver = new RunDriver(bus, learner, {
      runId: "run-f",
      settings: settings({ steps: 2 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => metrics.push([m.excluded, m.deadLettered]),
    });
    const summary = await driver.run();
    expect(metrics).toEqual([
      [2, 0],
      [2, 2],
    ]);
    expect(summary.trajectories).toBe(4);
    for (const stepIds of learner.steps) expect(stepIds.every((id) => id.includes(".0."))).toBe(true);
  });

  it("run driver - a step whose samples all failed fails the run with the first error", async () => {
    const { bus, learner } = setup();
    rollout(bus, {
      skip: () => true,
      async afterJob(job, publish) {
        for (const t of failedTrajectories(
          {
            runId: job.runId,
            step: Number(job.step),
            index: job.index,
            prompt: job.prompt,
            samples: job.samples,
            sampling: {},
            minWeightsVersion: 0,
          },
          "feedback kept failing",
        )) {
          await publish(t, t.id);
        }
      },
    });
    const driver = new RunDriver(bus, learner, {
      runId: "run-g",
      settings: settings({ steps: 2 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
    });
    await expect(driver.run()).rejects.toThrow(
      /step 1: every sample failed; the first error: feedback kept failing/,
    );
    expect(learner.steps).toHaveLength(0);
  });

  it("run driver - acks what it used and what it dropped, leaving the trajectories queue empty", async () => {
    const { bus, learner } = setup();
    rollout(bus, {
      async afterJob(job, publish) {
        const other = trajectory("run-other", Number(job.step), job.index, 0);
        await publish(other, other.id);
        if (job.step === 2) {
          const old = trajectory(job.runId, 1, job.index, 0);
          await publish(old, `${old.id}-late`);
        }
      },
    });
    const driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 3 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
    });
    await driver.run();
    expect(learner.steps).toHaveLength(3);
    // Extras published during the last step may still sit unpulled; a drain shows nothing is left
    // unacked by the driver (only never-delivered messages remain, and the drain acks those).
    const queue = await bus.queue("trajectories");
    const leftovers = await queue.pull(OPTIMIZER_CONSUMER, { max: 100, expiresMs: 0 });
    for (const m of leftovers) {
      const t = fromBinary(TrajectorySchema, m.data);
      expect(t.runId !== "run-a" || Number(t.step) < 3).toBe(true);
      await m.ack();
    }
    expect(await queue.pending()).toBe(0);
    expect(await (await bus.queue("jobs")).pending()).toBe(0);
  });

  it("run driver - a step whose trajectories do not all arrive fails with RunFailedError naming the count", async () => {
    const { bus, learner } = setup();
    rollout(bus, { skip: (job, s) => job.index === 1 && s === 1 });
    const driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 2 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 300,
      mode: "embedded",
    });
    const err = await driver.run().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunFailedError);
    expect((err as Error).message).toMatch(/step 1: only 3 of 4 trajectories arrived within 300 ms/);
    expect(learner.steps).toEqual([]);
    // The three that came are not acked: they go back to the queue for whoever runs next.
    expect(await (await bus.queue("trajectories")).pending()).toBe(3);
  });

  it("run driver - the latest pointer advances once per publishEvery steps and at the last step", async () => {
    const { bus, learner } = setup();
    rollout(bus);
    const seen: { version: bigint; step: number; ref: bigint }[] = [];
    const stop = await watchLatestWeights(bus, (m) =>
      seen.push({ version: m.version, step: m.step, ref: m.referenceVersion }),
    );
    cleanups.push(async () => stop());
    const metrics: StepMetrics[] = [];
    const driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 5, publishEvery: 2 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => metrics.push(m),
    });
    const summary = await driver.run();
    // v1 = the starting weights (step 0); then after steps 2 and 4, and after the last step 5.
    await new Promise((r) => setTimeout(r, 0));
    expect(seen.map((s) => [s.version, s.step])).toEqual([
      [1n, 0],
      [2n, 2],
      [3n, 4],
      [4n, 5],
    ]);
    expect(seen.every((s) => s.ref === 1n)).toBe(true);
    expect(learner.versionAtStep).toEqual([1, 1, 2, 2, 3]);
    expect(metrics.map((m) => m.weightsVersion)).toEqual([1n, 2n, 2n, 3n, 4n]);
    expect(summary.finalWeightsVersion).toBe(4n);
    expect(learner.blobs).toBe(4);
    expect((await readLatestWeights(bus))?.manifest.version).toBe(4n);
  });

  it("run driver - cancel() stops a running run at the next step boundary", async () => {
    const { bus, learner } = setup();
    rollout(bus);
    let driver: RunDriver | undefined;
    driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 10_000 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => {
        if (m.step === 2) driver?.cancel();
      },
    });
    const err = await driver.run().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunCancelledError);
    expect((err as Error).message).toMatch(/cancelled after step 2/);
    expect(learner.steps).toHaveLength(2);
    expect(driver.step).toBe(2);
  });

  it("run driver - cancel() stops a run waiting for trajectories that never come", async () => {
    const { bus, learner } = setup();
    const driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 3 }),
      prompts: ["p0", "p1"],
      // Far beyond the test's own timeout: only a cancel that interrupts the wait lets the test pass.
      stepTimeoutMs: 600_000,
      mode: "embedded",
    });
    const done = driver.run().catch((e: unknown) => e);
    const jobs = await bus.queue("jobs");
    await expect.poll(() => jobs.pending(), { timeout: 10_000 }).toBe(2);
    driver.cancel();
    const err = await done;
    expect(err).toBeInstanceOf(RunCancelledError);
    expect((err as Error).message).toMatch(/cancelled after step 0/);
    expect(learner.steps).toEqual([]);
  });

  it("run driver - a paused run holds between steps until unpaused", async () => {
    const { bus, learner } = setup();
    rollout(bus);
    let driver: RunDriver | undefined;
    driver = new RunDriver(bus, learner, {
      runId: "run-a",
      settings: settings({ steps: 3 }),
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onMetrics: (m) => {
        if (m.step === 1 && driver) driver.paused = true;
      },
    });
    const done = driver.run();
    await expect.poll(() => learner.steps.length, { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
    // Held: no step and no new jobs while paused (a running driver would queue step 2 at once).
    await new Promise((r) => setTimeout(r, 300));
    expect(learner.steps).toHaveLength(1);
    expect(await (await bus.queue("jobs")).pending()).toBe(0);
    driver.paused = false;
    const summary = await done;
    expect(summary.steps).toBe(3);
    expect(learner.steps).toHaveLength(3);
  });
});
