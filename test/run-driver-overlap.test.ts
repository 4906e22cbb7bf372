/**
 * The run loop with maxStaleness > 0 (RunDriver on a MemoryBus, fake Learner and rollout): the
 * next steps' jobs go out before an update ends, samples a step's jobs produce early wait for
 * their own step, every trajectory is applied once and never more than maxStaleness versions
 * old, and one older than the bound is excluded.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type PromptJob,
  PromptJobSchema,
  type StepMetrics,
  TrajectorySchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import type { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { readLatestWeights } from "../services/core/src/weights/weights-channel.js";
import { RunDriver } from "../services/optimizer/run-driver.js";
import { ids, settings, useFakeRun } from "./helpers/fake-run.js";

const { setup, rollout } = useFakeRun();

/** The step of every job published on the bus, in publish order. */
async function recordJobSteps(bus: MemoryBus): Promise<number[]> {
  const steps: number[] = [];
  const jobs = await bus.queue("jobs");
  const publish = jobs.publish.bind(jobs);
  jobs.publish = (data, opts) => {
    steps.push(fromBinary(PromptJobSchema, data).step);
    return publish(data, opts);
  };
  return steps;
}

/** A rollout stamping each job's samples with the version the latest pointer names now, like a Policy. */
function sampledByLatest(bus: MemoryBus) {
  return async () => Number((await readLatestWeights(bus))?.manifest.version ?? 0);
}

function driver(bus: MemoryBus, learner: ConstructorParameters<typeof RunDriver>[1], maxStaleness: number) {
  const metrics: StepMetrics[] = [];
  const d = new RunDriver(bus, learner, {
    runId: "run-o",
    settings: settings({ steps: 4, maxStaleness, offPolicy: "ppo-clip" }),
    prompts: ["p0", "p1"],
    stepTimeoutMs: 10_000,
    mode: "embedded",
    onMetrics: (m) => metrics.push(m),
  });
  return { d, metrics };
}

describe("run driver overlap", () => {
  it("run driver overlap - with maxStaleness 1, step k + 1's jobs are out before step k's update ends and samples lag at most one version", async () => {
    const { bus, learner } = setup();
    const published = await recordJobSteps(bus);
    rollout(bus, { sampledBy: sampledByLatest(bus) });
    const queuedAtUpdate: number[] = [];
    learner.onStep = async () => {
      queuedAtUpdate.push(Math.max(...published));
      // The update takes a while: the rollout samples the next step's jobs meanwhile.
      await new Promise((r) => setTimeout(r, 20));
    };
    const { d, metrics } = driver(bus, learner, 1);
    const summary = await d.run();
    // Each update ran with the next step's jobs already published (the last has no next step).
    expect(queuedAtUpdate).toEqual([2, 3, 4, 4]);
    expect(published).toEqual([1, 1, 2, 2, 3, 3, 4, 4]);
    // Exactly each step's own trajectories, once each.
    expect(learner.steps).toEqual([1, 2, 3, 4].map((s) => ids("run-o", s)));
    const lags = learner.applied.map(({ t, version }) => version - Number(t.weightsVersion));
    expect(Math.max(...lags)).toBeLessThanOrEqual(1);
    expect(Math.min(...lags)).toBeGreaterThanOrEqual(0);
    // Sampled while the previous update ran: one version behind, and the metrics say so.
    expect(lags.slice(4).every((lag) => lag === 1)).toBe(true);
    expect(metrics.map((m) => m.sampleStaleness)).toEqual([0, 1, 1, 1]);
    expect(summary.trajectories).toBe(16);
    expect(await (await bus.queue("jobs")).pending()).toBe(0);
  });

  it("run driver overlap - with maxStaleness 1 a step's weights go out only once the next step's samples are all in, so each step is sampled by one version", async () => {
    const { bus, learner } = setup();
    const latest = sampledByLatest(bus);
    // Sampling is slower than the update: each job takes longer than a whole update.
    rollout(bus, {
      sampledBy: async () => {
        await new Promise((r) => setTimeout(r, 15));
        return latest();
      },
    });
    const { d, metrics } = driver(bus, learner, 1);
    await d.run();
    const byStep = new Map<number, Set<number>>();
    for (const { t } of learner.applied) {
      const versions = byStep.get(t.step) ?? new Set();
      versions.add(Number(t.weightsVersion));
      byStep.set(t.step, versions);
    }
    // One version per step, each step's one newer than the step before's (step 1: the reference).
    expect([...byStep.values()].map((v) => [...v])).toEqual([[1], [1], [2], [3]]);
    expect(metrics.map((m) => m.sampleStaleness)).toEqual([0, 1, 1, 1]);
  });

  it("run driver overlap - with maxStaleness 2, a later step's early trajectories wait for their step and are applied once", async () => {
    const { bus, learner } = setup();
    const published = await recordJobSteps(bus);
    const arrivals: number[] = [];
    const out = await bus.queue("trajectories");
    const publish = out.publish.bind(out);
    out.publish = (data, opts) => {
      arrivals.push(fromBinary(TrajectorySchema, data).step);
      return publish(data, opts);
    };
    // Two rollout loops; one is slow on step 2's first job, so step 3's samples arrive before it.
    const latest = sampledByLatest(bus);
    const slow = async (job: PromptJob) => {
      if (job.step === 2 && job.index === 0) await new Promise((r) => setTimeout(r, 50));
      return latest();
    };
    rollout(bus, { sampledBy: slow });
    rollout(bus, { sampledBy: slow });
    const { d } = driver(bus, learner, 2);
    await d.run();
    expect(arrivals.indexOf(3)).toBeLessThan(arrivals.lastIndexOf(2));
    // Steps 2 and 3 go out with step 1's update; then one step ahead of each update.
    expect(published).toEqual([1, 1, 2, 2, 3, 3, 4, 4]);
    expect(learner.steps).toEqual([1, 2, 3, 4].map((s) => ids("run-o", s)));
    for (const { t, version } of learner.applied) {
      expect(version - Number(t.weightsVersion)).toBeLessThanOrEqual(2);
    }
    expect(await out.pending()).toBe(0);
  });

  it("run driver overlap - a sample older than maxStaleness versions is excluded and counted", async () => {
    const { bus, learner } = setup();
    const latest = sampledByLatest(bus);
    // One job of step 3 comes back stamped with the run's first version, two behind the bound.
    rollout(bus, { sampledBy: async (job) => (job.step === 3 && job.index === 1 ? 1 : latest()) });
    const { d, metrics } = driver(bus, learner, 1);
    await d.run();
    expect(metrics.map((m) => m.excluded)).toEqual([0, 0, 2, 0]);
    expect(learner.steps[2]).toEqual(ids("run-o", 3).slice(0, 2));
  });
});
