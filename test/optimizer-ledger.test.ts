/**
 * The trajectory ledger across a crash (docs/architecture.md#exactly-once): an Optimizer that
 * dies in the middle of step 4's update with maxStaleness 1 — step 4's samples gathered and
 * unacked, step 5's sampled and buffered — is resumed from its checkpoint of step 2 on the same
 * bus. The resumed run drops every trajectory the dead attempt left in flight (counted in the
 * summary), drops a late redelivery of an id the checkpoint's ledger lists as applied, samples
 * steps 3.. again, and every (step, prompt, sample) of the run is applied exactly once in the
 * state that continues.
 */
import { toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { readLatestWeights } from "../services/core/src/weights/weights-channel.js";
import { RunDriver } from "../services/optimizer/run-driver.js";
import { decodeLedger, encodeLedger, isAttemptOf } from "../services/optimizer/trajectory-ledger.js";
import { FakeLearner, settings, trajectory, useFakeRun } from "./helpers/fake-run.js";

const { setup, rollout } = useFakeRun();
const RUN = "run-l";
const until = async (cond: () => boolean) => {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
};
/** `<bus run id>.<step>.<prompt>.<sample>` → `<step>.<prompt>.<sample>`: the sample, whichever attempt drew it. */
const logical = (id: string) => id.split(".").slice(-3).join(".");

describe("optimizer ledger", () => {
  it("ledger - an Optimizer crashed with trajectories in flight is resumed: each in-flight one dropped and counted, every sample applied exactly once", async () => {
    const { bus, learner: first } = setup({ ackWaitMs: 100 });
    const runSettings = settings({ steps: 6, maxStaleness: 1, offPolicy: "ppo-clip" });
    // The rollout keeps answering jobs of any attempt, but waits while `hold` is set.
    let hold = false;
    const latest = async () => Number((await readLatestWeights(bus))?.manifest.version ?? 0);
    rollout(bus, { sampledBy: () => until(() => !hold).then(latest) });
    const queue = await bus.queue("trajectories");
    const pulled: number[] = [];
    const pull = queue.pull.bind(queue);
    queue.pull = async (consumer, opts) => {
      const msgs = await pull(consumer, opts);
      for (const m of msgs) pulled.push(Number(m.msgId.split(".")[1]));
      return msgs;
    };

    // Attempt 1: checkpoints (its ledger) after step 2, freezes for good inside step 4's update.
    let saved = "";
    first.onStep = (step) => (step === 4 ? new Promise<void>(() => undefined) : Promise.resolve());
    const crashed = new RunDriver(bus, first, {
      runId: RUN,
      settings: runSettings,
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      onStepEnd: async (step) => {
        if (step !== 2) return;
        saved = encodeLedger(crashed.ledger.record(step));
        crashed.ledger.checkpointed(step);
      },
    });
    void crashed.run().catch(() => undefined);
    // Dead in step 4's update: step 4's four samples in hand, unacked, and step 5's four pulled.
    await until(() => first.steps.length === 4 && pulled.filter((s) => s === 5).length === 4);
    hold = true;
    const ledger = decodeLedger("step-000002", saved, 2);
    expect(ledger).not.toBeNull();
    expect(Object.keys(ledger?.applied ?? {})).toEqual(["1", "2"]);
    expect(ledger?.applied["2"]).toEqual(first.steps[1]);
    // Step 3's jobs were out when step 2's checkpoint was written.
    expect(ledger?.queuedThrough).toBe(3);

    // Attempt 2, from the checkpoint of step 2, on the same bus (its queues survived the crash).
    const second = new FakeLearner(bus);
    const lines: string[] = [];
    const resumed = new RunDriver(bus, second, {
      runId: RUN,
      settings: runSettings,
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      log: (l) => lines.push(l),
      resume: {
        step: 2,
        referenceBlob: Uint8Array.of(9),
        servedBlob: Uint8Array.of(8),
        servedStep: 1,
        history: [],
        trajectories: 8,
        tokens: 24,
        wallSeconds: 0,
        ledger,
      },
    });
    // A late redelivery of a sample step 2 applied, republished under another message id.
    const late = trajectory(RUN, 2, 1, 0);
    await queue.publish(toBinary(TrajectorySchema, late), { msgId: `${late.id}.again` });
    const done = resumed.run();
    // The leftovers come back (ack wait) before any new sample: then let the rollout go on.
    await until(() => resumed.ledger.drops.inFlight + resumed.ledger.drops.alreadyApplied === 9);
    hold = false;
    const summary = await done;

    expect(resumed.ledger.drops).toEqual({ inFlight: 8, alreadyApplied: 1, settled: 0 });
    expect(summary.droppedInFlight).toBe(8);
    expect(
      lines.filter((l) => /dropping trajectory run-l\.[45]\..*in flight when attempt run-l died/.test(l)),
    ).toHaveLength(8);
    expect(lines.some((l) => l.includes(`dropping trajectory ${late.id}: already applied at step 2`))).toBe(
      true,
    );
    // Nothing of the dead attempt was applied by the resumed one.
    expect(second.applied.every(({ t }) => t.runId === resumed.busRunId)).toBe(true);
    expect(isAttemptOf(resumed.busRunId, RUN)).toBe(true);

    // The state that continues: steps 1–2 of the checkpoint, then the resumed run's 3–6.
    const kept = [...Object.values(ledger?.applied ?? {}).flat(), ...second.steps.flat()].map(logical);
    const all = [1, 2, 3, 4, 5, 6].flatMap((s) => [0, 1].flatMap((p) => [0, 1].map((k) => `${s}.${p}.${k}`)));
    const twice = kept.length - new Set(kept).size;
    const lost = all.filter((id) => !kept.includes(id)).length;
    console.log(
      `ledger resume: delivered ${new Set(kept).size}/${all.length}, applied twice ${twice}, lost ${lost}, in flight dropped ${summary.droppedInFlight}`,
    );
    expect([...kept].sort()).toEqual([...all].sort());
    expect(summary.steps).toBe(6);
    expect(summary.trajectories).toBe(24);
  });

  it("ledger - a run started over from step 0 drops the dead attempt's queued trajectories as in flight and applies only its own", async () => {
    const { bus, learner } = setup({ ackWaitMs: 100 });
    const runSettings = settings({ steps: 2 });
    // The dead attempt (bus run id = the run id) left step 1's samples and two of step 2's queued.
    const queue = await bus.queue("trajectories");
    const leftovers = [
      trajectory(RUN, 1, 0, 0),
      trajectory(RUN, 1, 0, 1),
      trajectory(RUN, 1, 1, 0),
      trajectory(RUN, 1, 1, 1),
      trajectory(RUN, 2, 0, 0),
      trajectory(RUN, 2, 1, 1),
    ];
    for (const t of leftovers) await queue.publish(toBinary(TrajectorySchema, t), { msgId: t.id });
    rollout(bus);
    const lines: string[] = [];
    const restarted = new RunDriver(bus, learner, {
      runId: RUN,
      settings: runSettings,
      prompts: ["p0", "p1"],
      stepTimeoutMs: 10_000,
      mode: "embedded",
      log: (l) => lines.push(l),
      restarted: true,
    });
    expect(restarted.busRunId).toMatch(new RegExp(`^${RUN}-resume0-[0-9a-f]{4}$`));
    const summary = await restarted.run();
    expect(summary.steps).toBe(2);
    expect(summary.droppedInFlight).toBe(leftovers.length);
    expect(restarted.ledger.drops).toEqual({ inFlight: leftovers.length, alreadyApplied: 0, settled: 0 });
    expect(learner.applied.every(({ t }) => t.runId === restarted.busRunId)).toBe(true);
    expect(learner.steps.flat().map(logical).sort()).toEqual(
      [1, 2].flatMap((st) => [0, 1].flatMap((p) => [0, 1].map((k) => `${st}.${p}.${k}`))).sort(),
    );
    expect(lines.filter((l) => l.includes(`in flight when attempt ${RUN} died`))).toHaveLength(
      leftovers.length,
    );
  });
});
