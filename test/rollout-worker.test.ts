/**
 * The Rollout worker loop on a MemoryBus with fake Policy and Feedback callers: a job becomes G
 * trajectories published with msgId = trajectory id and is acked; a failing peer gets the job
 * nak'd and redelivered without duplicating output; a stale policy gives the job back until it
 * serves the job's version; undecodable jobs are dropped; bad scorer answers never publish.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  FinishReason,
  PromptJobSchema,
  type Trajectory,
  TrajectorySchema,
} from "../services/core/gen/rlaif/common/v1/types_pb.js";
import {
  type ScoreResponse,
  ScoreResponseSchema,
  ScoreStatus,
} from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import {
  type GenerateResponse,
  GenerateResponseSchema,
  type LogprobsResponse,
  LogprobsResponseSchema,
  WeightsSelector,
} from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import type { QueueMessage } from "../services/core/src/bus/bus.js";
import { MemoryBus } from "../services/core/src/bus/memory-bus.js";
import { OPTIMIZER_CONSUMER, ROLLOUT_CONSUMER } from "../services/core/src/bus/subjects.js";
import { RpcError } from "../services/core/src/errors.js";
import { type FeedbackCaller, type PolicyCaller, trajectoryId } from "../services/rollout/collect.js";
import { RolloutWorker } from "../services/rollout/rollout-worker.js";

/** A policy that answers G completions of 3 tokens each, from a settable weights version. */
class FakePolicy implements PolicyCaller {
  version = 1;
  generateCalls = 0;
  logprobsCalls: { weights: number | undefined; sequences: number }[] = [];
  metadata: Record<string, string>[] = [];
  async generate(
    req: Parameters<PolicyCaller["generate"]>[0],
    opts?: Parameters<PolicyCaller["generate"]>[1],
  ): Promise<GenerateResponse> {
    this.generateCalls++;
    this.metadata.push(opts?.metadata ?? {});
    const samples = req.samplesPerPrompt || 1;
    const prompt = [...Buffer.from(req.prompts?.[0] ?? "")];
    return create(GenerateResponseSchema, {
      weightsVersion: BigInt(this.version),
      completions: Array.from({ length: samples }, (_, s) => ({
        promptIndex: 0,
        sampleIndex: s,
        text: `c${s}!`,
        promptTokens: prompt,
        tokens: [...Buffer.from(`c${s}!`)],
        logprobs: [-1, -2, -3],
        finishReason: FinishReason.LENGTH,
      })),
    });
  }
  async logprobs(req: Parameters<PolicyCaller["logprobs"]>[0]): Promise<LogprobsResponse> {
    this.logprobsCalls.push({ weights: req.weights, sequences: req.sequences?.length ?? 0 });
    return create(LogprobsResponseSchema, {
      weightsVersion: 1n,
      results: (req.sequences ?? []).map((s) => ({ logprobs: (s.completionTokens ?? []).map(() => -1.5) })),
    });
  }
}

/** A feedback service whose answer a test can replace per call. */
class FakeFeedback implements FeedbackCaller {
  calls = 0;
  answer: (items: number, call: number) => MessageInitShape<typeof ScoreResponseSchema> | Error = (
    items,
  ) => ({
    scores: Array.from({ length: items }, (_, i) => ({ reward: 0.5 + i / 10, rationale: `item ${i}` })),
    scorerId: "fake-scorer",
    scorerVersion: "9",
  });
  /** The first `n` calls fail with `message` (a scorer that is down, then back); later ones answer as before. */
  failFirst(n: number, message: string): void {
    const ok = this.answer;
    this.answer = (items, call) => (call <= n ? new Error(message) : ok(items, call));
  }
  /** Every call from now on never answers (a hung scorer); `timeouts` records the deadline each was given. */
  hang(): void {
    this.hung = true;
  }
  hung = false;
  timeouts: (number | undefined)[] = [];
  async score(
    req: Parameters<FeedbackCaller["score"]>[0],
    opts?: Parameters<FeedbackCaller["score"]>[1],
  ): Promise<ScoreResponse> {
    this.calls++;
    this.timeouts.push(opts?.timeoutMs);
    if (this.hung) return new Promise<never>(() => undefined);
    const a = this.answer(req.items?.length ?? 0, this.calls);
    if (a instanceof Error) throw a;
    return create(ScoreResponseSchema, a);
  }
}

function job(overrides: { index?: number; minWeightsVersion?: bigint } = {}): Uint8Array {
  return toBinary(
    PromptJobSchema,
    create(PromptJobSchema, {
      runId: "run-w",
      step: 3,
      index: 1,
      prompt: "The film was",
      samples: 3,
      sampling: { maxNewTokens: 3, temperature: 1, seed: 42n },
      minWeightsVersion: 1n,
      ...overrides,
    }),
  );
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(
  opts: {
    ackWaitMs?: number;
    retryMs?: number;
    maxDeliver?: number;
    staleWaitMs?: number;
    concurrency?: number;
    feedbackTimeoutMs?: number;
  } = {},
) {
  const bus = new MemoryBus({ ackWaitMs: opts.ackWaitMs ?? 30_000 });
  const policy = new FakePolicy();
  const feedback = new FakeFeedback();
  const logs: string[] = [];
  const worker = new RolloutWorker(bus, policy, feedback, {
    group: ROLLOUT_CONSUMER,
    rpcTimeoutMs: 1000,
    log: (l) => logs.push(l),
    ...(opts.retryMs !== undefined ? { retryMs: opts.retryMs } : {}),
    ...(opts.maxDeliver ? { maxDeliver: opts.maxDeliver } : {}),
    ...(opts.staleWaitMs !== undefined ? { staleWaitMs: opts.staleWaitMs } : {}),
    ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    ...(opts.feedbackTimeoutMs ? { feedbackTimeoutMs: opts.feedbackTimeoutMs } : {}),
  });
  cleanups.push(async () => {
    // stop() flags the loop; closing the bus releases its pending pull at once.
    const stopped = worker.stop();
    await bus.close();
    await stopped;
  });
  return { bus, policy, feedback, worker, logs };
}

async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Everything on the trajectories queue, acked, in order. */
async function drain(bus: MemoryBus): Promise<{ msg: QueueMessage; t: Trajectory }[]> {
  const q = await bus.queue("trajectories");
  const msgs = await q.pull(OPTIMIZER_CONSUMER, { max: 100, expiresMs: 0 });
  for (const m of msgs) await m.ack();
  return msgs.map((msg) => ({ msg, t: fromBinary(TrajectorySchema, msg.data) }));
}

/** The job's 3 samples, once published: each failed by the scorer (ERROR), its tokens kept. */
async function failedSamples(bus: MemoryBus): Promise<Trajectory[]> {
  await until("the failed samples", async () => (await (await bus.queue("trajectories")).pending()) === 3);
  const out = (await drain(bus)).map((o) => o.t);
  for (const t of out) {
    expect(t.scoreStatus).toBe(ScoreStatus.ERROR);
    expect(t.reward).toBe(0);
  }
  return out;
}

describe("rollout worker", () => {
  it("rollout worker - a job becomes G trajectories published under their ids, then the job is acked", async () => {
    const { bus, policy, feedback, worker } = setup();
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1", headers: { traceparent: "00-aa-bb-01" } });
    worker.start();
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    expect(await jobs.pending()).toBe(0);
    const out = await drain(bus);
    expect(out.map((o) => o.msg.msgId)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
    out.forEach(({ msg, t }, s) => {
      expect(msg.msgId).toBe(t.id);
      expect(msg.headers.traceparent).toBe("00-aa-bb-01");
      expect(t.runId).toBe("run-w");
      expect(t.step).toBe(3);
      expect(t.promptIndex).toBe(1);
      expect(t.sampleIndex).toBe(s);
      expect(t.prompt).toBe("The film was");
      expect(t.completion).toBe(`c${s}!`);
      expect(t.completionTokens).toEqual([...Buffer.from(`c${s}!`)]);
      expect(t.behaviourLogprobs).toEqual([-1, -2, -3]);
      expect(t.referenceLogprobs).toEqual([-1.5, -1.5, -1.5]);
      expect(t.reward).toBeCloseTo(0.5 + s / 10, 9);
      expect(t.rationale).toBe(`item ${s}`);
      expect(t.scorerId).toBe("fake-scorer");
      expect(t.scorerVersion).toBe("9");
      expect(t.weightsVersion).toBe(1n);
      expect(t.finishReason).toBe(FinishReason.LENGTH);
    });
    expect(worker.counters).toEqual({
      jobsCompleted: 1,
      trajectoriesPublished: 3,
      jobsFailed: 0,
      lastWeightsVersion: 1,
      scorerTimeouts: 0,
    });
    // The job's trace context went to the peers, and the reference was asked for the same tokens.
    expect(policy.metadata[0]?.traceparent).toBe("00-aa-bb-01");
    expect(policy.logprobsCalls).toEqual([{ weights: WeightsSelector.REFERENCE, sequences: 3 }]);
    expect(feedback.calls).toBe(1);
  });

  it("rollout worker - jobs without a traceparent get a fresh W3C one", async () => {
    const { bus, policy, worker } = setup();
    await (await bus.queue("jobs")).publish(job(), { msgId: "j1" });
    worker.start();
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    const out = await drain(bus);
    const tp = out[0]?.msg.headers.traceparent ?? "";
    expect(tp).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(out.every((o) => o.msg.headers.traceparent === tp)).toBe(true);
    expect(policy.metadata[0]?.traceparent).toBe(tp);
  });

  it("rollout worker - a feedback failure is retried within the job's delivery (only the Score call), which then publishes once", async () => {
    const { bus, policy, feedback, worker, logs } = setup();
    feedback.failFirst(1, "scorer down");
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    expect(feedback.calls).toBe(2);
    expect(policy.generateCalls).toBe(1);
    expect(worker.counters.jobsFailed).toBe(0);
    expect(worker.counters.trajectoriesPublished).toBe(3);
    expect(
      logs.some((l) => l.includes("Score to feedback failed (retry 1") && l.includes("scorer down")),
    ).toBe(true);
    expect(await jobs.pending()).toBe(0);
    const out = await drain(bus);
    expect(out.map((o) => o.t.id)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
    expect(await (await bus.queue("trajectories")).pending()).toBe(0);
  });

  it("rollout worker - a job redelivered after its trajectories went out publishes no duplicates", async () => {
    const { bus, worker } = setup();
    const jobs = await bus.queue("jobs");
    await jobs.publish(job({ index: 0 }), { msgId: "first" });
    worker.start();
    await until("the first job", () => worker.counters.jobsCompleted === 1);
    // The same job again (as after a crash between publish and ack): the bus drops the copies.
    await jobs.publish(job({ index: 0 }), { msgId: "first-again" });
    await until("the repeated job", () => worker.counters.jobsCompleted === 2);
    expect(worker.counters.trajectoriesPublished).toBe(3);
    expect((await drain(bus)).map((o) => o.t.id)).toEqual(["run-w.3.0.0", "run-w.3.0.1", "run-w.3.0.2"]);
  });

  it("rollout worker - a policy older than the job's minWeightsVersion is waited for (not failed) until it catches up", async () => {
    const { bus, policy, feedback, worker } = setup();
    policy.version = 1;
    const jobs = await bus.queue("jobs");
    await jobs.publish(job({ minWeightsVersion: 2n }), { msgId: "run-w.3.1" });
    worker.start();
    await until("a few stale attempts", () => policy.generateCalls >= 3);
    expect(feedback.calls).toBe(0);
    expect(worker.counters.jobsCompleted).toBe(0);
    expect(worker.counters.trajectoriesPublished).toBe(0);
    expect(await (await bus.queue("trajectories")).pending()).toBe(0);
    expect(await jobs.pending()).toBe(1);
    // Stale is not a failure: nothing is counted or backed off.
    expect(worker.counters.jobsFailed).toBe(0);
    policy.version = 2;
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    const out = await drain(bus);
    expect(out).toHaveLength(3);
    expect(out.every((o) => o.t.weightsVersion === 2n)).toBe(true);
    expect(worker.counters.lastWeightsVersion).toBe(2);
    expect(await jobs.pending()).toBe(0);
  });

  it("rollout worker - an undecodable job is acked and dropped, and the next job is served", async () => {
    const { bus, worker, logs } = setup();
    const jobs = await bus.queue("jobs");
    await jobs.publish(Uint8Array.of(0x0a, 0x05), { msgId: "garbage" });
    await jobs.publish(job(), { msgId: "good" });
    worker.start();
    await until("the good job", () => worker.counters.jobsCompleted === 1);
    expect(await jobs.pending()).toBe(0);
    expect(logs.some((l) => l.includes("undecodable") && l.includes("garbage"))).toBe(true);
    expect(worker.counters.jobsFailed).toBe(0);
    expect((await drain(bus)).map((o) => o.t.id)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
  });

  it("rollout worker - a scorer answer with the wrong number of scores fails the job's samples once (no retry, no redelivery)", async () => {
    const { bus, feedback, worker } = setup();
    feedback.answer = (items) => ({ scores: Array.from({ length: items - 1 }, () => ({ reward: 0.1 })) });
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    const out = await failedSamples(bus);
    expect(worker.counters.jobsCompleted).toBe(0);
    expect(feedback.calls).toBe(1);
    for (const t of out)
      expect(t.error).toMatch(/scorer "\(no scorer_id\)" answered badly: scores.*exactly 3/);
    await until("the ack", async () => (await jobs.pending()) === 0);
  });

  it("rollout worker - a NaN reward or NaN per-token reward fails the job's samples, and the job is acked", async () => {
    for (const bad of [
      { reward: Number.NaN },
      { reward: Number.POSITIVE_INFINITY },
      { reward: 0.2, tokenRewards: [0, Number.NaN, 0] },
    ]) {
      const { bus, feedback, worker } = setup();
      feedback.answer = (items) => ({
        scores: Array.from({ length: items }, (_, i) => (i === 1 ? bad : { reward: 0.3 })),
      });
      const jobs = await bus.queue("jobs");
      await jobs.publish(job(), { msgId: "run-w.3.1" });
      worker.start();
      const out = await failedSamples(bus);
      expect(feedback.calls).toBe(1);
      for (const t of out) expect(t.error).toMatch(/answered badly: scores\[1\].*finite/);
      await until("the ack", async () => (await jobs.pending()) === 0);
      const stopped = worker.stop();
      await bus.close();
      await stopped;
    }
  });

  it("rollout worker - per-token rewards of the wrong length are refused: the samples fail", async () => {
    const { bus, feedback, worker } = setup();
    feedback.answer = (items) => ({
      scores: Array.from({ length: items }, () => ({ reward: 0.3, tokenRewards: [0.1, 0.2] })),
    });
    await (await bus.queue("jobs")).publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    for (const t of await failedSamples(bus)) expect(t.error).toMatch(/scores\[0\]\.token_rewards/);
  });

  it("rollout worker - a job held past the ack wait by a slow peer is not lost", async () => {
    const { bus, policy, worker } = setup({ ackWaitMs: 150 });
    const generate = policy.generate.bind(policy);
    let first = true;
    policy.generate = async (req, opts) => {
      if (first) {
        first = false;
        await new Promise((r) => setTimeout(r, 300));
      }
      return generate(req, opts);
    };
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the job to be settled", async () => (await jobs.pending()) === 0);
    // Whether the slow attempt or the redelivery finished first, each trajectory is there once.
    expect((await drain(bus)).map((o) => o.t.id)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
    expect(worker.counters.trajectoriesPublished).toBe(3);
  });

  it("rollout worker - a request the Policy refuses (INVALID_ARGUMENT) marks the job's samples failed at once", async () => {
    const { bus, policy, worker } = setup();
    policy.generate = async () => {
      throw new RpcError(status.INVALID_ARGUMENT, "prompts[0]: too long for the context");
    };
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the failed samples", async () => (await (await bus.queue("trajectories")).pending()) === 3);
    const out = await drain(bus);
    expect(out.map(({ t }) => t.id)).toEqual([0, 1, 2].map((s) => trajectoryId("run-w", 3, 1, s)));
    for (const { t, msg } of out) {
      expect(t.error).toContain("prompts[0]: too long");
      expect(t.completionTokens).toEqual([]);
      expect(msg.msgId).toBe(t.id);
    }
    await until("the ack", async () => (await jobs.pending()) === 0);
    expect(worker.counters.jobsCompleted).toBe(0);
    expect(worker.counters.jobsFailed).toBe(1);
  });

  it("rollout worker - a scorer failing past the retry budget on the last allowed delivery dead-letters the job, its samples failed", async () => {
    const { bus, feedback, worker, logs } = setup({ retryMs: 0, maxDeliver: 2 });
    feedback.answer = () => new Error("judge unavailable");
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the failed samples", async () => (await (await bus.queue("trajectories")).pending()) === 3);
    // Delivery 1 spent its (zero) budget and was given back; delivery 2 was the last allowed.
    expect(feedback.calls).toBe(2);
    expect(logs.some((l) => l.includes("given back for redelivery (delivery 1 of 2)"))).toBe(true);
    const out = await drain(bus);
    for (const { t } of out) {
      expect(t.error).toMatch(/^dead-lettered after 2 deliveries: .*judge unavailable/);
      expect(t.completionTokens).toEqual([]);
    }
    await until("the ack", async () => (await jobs.pending()) === 0);
    const dead = await (await bus.queue("deadLetters")).pull("operator", { max: 10, expiresMs: 0 });
    expect(dead.map((m) => m.msgId)).toEqual(["run-w.3.1"]);
    expect(fromBinary(PromptJobSchema, dead[0]?.data ?? new Uint8Array()).index).toBe(1);
    expect(dead[0]?.headers["rlaif-error"]).toContain("judge unavailable");
  });

  it("rollout worker - failures are retried by time: a scorer down for three tries is ridden out in one delivery", async () => {
    const { bus, policy, feedback, worker, logs } = setup({ retryMs: 60_000 });
    feedback.failFirst(3, "scorer restarting");
    await (await bus.queue("jobs")).publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the job to complete", () => worker.counters.jobsCompleted === 1, 15_000);
    expect(feedback.calls).toBe(4);
    expect(policy.generateCalls).toBe(1);
    // Full-jitter backoff: each wait is drawn below its cap (200, 400, 800 ms); the job never left.
    const waits = logs
      .map((l) => Number(/retry \d+ in (\d+) ms/.exec(l)?.[1] ?? Number.NaN))
      .filter((w) => w >= 0);
    expect(waits).toHaveLength(3);
    for (const [i, w] of waits.entries()) expect(w).toBeLessThanOrEqual(200 * 2 ** i);
    expect(logs.some((l) => l.includes("given back"))).toBe(false);
    expect((await drain(bus)).map((o) => o.t.id)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
  });

  it("rollout worker - when the retry budget is spent the job is given back, and its redelivery publishes it", async () => {
    const { bus, feedback, worker, logs } = setup({ retryMs: 0 });
    feedback.failFirst(1, "scorer down");
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    expect(logs.some((l) => l.includes("given back for redelivery (delivery 1 of 5)"))).toBe(true);
    expect((await drain(bus)).map((o) => o.t.id)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
    expect(await jobs.pending()).toBe(0);
  });

  it("rollout worker - waiting for a stale Policy does not spend the retry budget", async () => {
    const { bus, policy, feedback, worker, logs } = setup({ retryMs: 0 });
    policy.version = 1;
    // One scorer failure after the wait is still allowed (no budget was spent), then it works.
    feedback.failFirst(1, "blip");
    await (await bus.queue("jobs")).publish(job({ minWeightsVersion: 2n }), { msgId: "run-w.3.1" });
    worker.start();
    await until("a few stale attempts", () => policy.generateCalls >= 4);
    policy.version = 2;
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    expect(worker.counters.jobsFailed).toBe(1);
    // The budget of 0 let the one failure give the job back, but the stale wait before it did not.
    expect(logs.filter((l) => l.includes("given back")).length).toBe(1);
    expect((await drain(bus)).every((o) => o.t.weightsVersion === 2n)).toBe(true);
  });

  it("rollout worker - a job delivered more than maxDeliver times (its holders died) is dead-lettered at once", async () => {
    const { bus, policy, worker } = setup({ ackWaitMs: 20, maxDeliver: 2 });
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    // Two deliveries that are never settled, as by two workers killed while holding the job.
    for (let d = 0; d < 2; d++) {
      expect(await jobs.pull(ROLLOUT_CONSUMER, { max: 1, expiresMs: 1000 })).toHaveLength(1);
    }
    worker.start();
    await until("the failed samples", async () => (await (await bus.queue("trajectories")).pending()) === 3);
    expect(policy.generateCalls).toBe(0);
    for (const { t } of await drain(bus)) {
      expect(t.error).toBe("dead-lettered after 3 deliveries: no delivery produced trajectories");
    }
    expect(await (await bus.queue("deadLetters")).pending()).toBe(1);
  });

  it("rollout worker - with concurrency 3 three jobs are in flight at once, never more, and all complete", async () => {
    const { bus, policy, worker } = setup({ concurrency: 3 });
    const generate = policy.generate.bind(policy);
    let inFlight = 0;
    let most = 0;
    const waiting: (() => void)[] = [];
    policy.generate = async (req, opts) => {
      most = Math.max(most, ++inFlight);
      await new Promise<void>((resolve) => waiting.push(resolve));
      inFlight--;
      return generate(req, opts);
    };
    const jobs = await bus.queue("jobs");
    for (const index of [0, 1, 2, 3, 4]) await jobs.publish(job({ index }), { msgId: `run-w.3.${index}` });
    worker.start();
    await until("three jobs in flight", () => inFlight === 3);
    while (worker.counters.jobsCompleted < 5) {
      for (const release of waiting.splice(0)) release();
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(most).toBe(3);
    expect((await drain(bus)).length).toBe(15);
  });

  it("rollout worker - a scorer that never answers costs its attempts' deadlines, then the job's samples fail (not redelivered)", async () => {
    // A retry budget of an hour: were a hung scorer retried like an unreachable one, this job
    // would be held for the hour; instead it ends after 3 attempts of the scorer's deadline.
    const { bus, policy, feedback, worker, logs } = setup({
      retryMs: 3_600_000,
      maxDeliver: 3,
      feedbackTimeoutMs: 50,
    });
    feedback.hang();
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    const out = await failedSamples(bus);
    // Each attempt given the feedback deadline (not the Policy's 1000 ms); the Policy sampled once.
    expect(feedback.calls).toBe(3);
    expect(feedback.timeouts).toEqual([50, 50, 50]);
    expect(policy.generateCalls).toBe(1);
    expect(worker.counters.scorerTimeouts).toBe(1);
    expect(logs.some((l) => l.includes("given back for redelivery"))).toBe(false);
    for (const t of out) {
      expect(t.error).toBe("scorer feedback timed out after 3 attempts (50 ms each)");
      expect(t.completionTokens.length).toBeGreaterThan(0);
    }
    await until("the ack", async () => (await jobs.pending()) === 0);
    expect(await (await bus.queue("deadLetters")).pending()).toBe(0);
  });

  it("rollout worker - a scorer that hangs once is retried and the job publishes every sample once", async () => {
    const { bus, policy, feedback, worker } = setup({ feedbackTimeoutMs: 50 });
    const score = feedback.score.bind(feedback);
    let first = true;
    feedback.score = (req, opts) => {
      if (first) {
        first = false;
        return new Promise<never>(() => undefined);
      }
      return score(req, opts);
    };
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "run-w.3.1" });
    worker.start();
    await until("the job to complete", () => worker.counters.jobsCompleted === 1);
    expect(worker.counters.scorerTimeouts).toBe(0);
    expect(policy.generateCalls).toBe(1);
    expect((await drain(bus)).map((o) => o.t.id)).toEqual(["run-w.3.1.0", "run-w.3.1.1", "run-w.3.1.2"]);
    expect(await jobs.pending()).toBe(0);
  });

  it("rollout worker - stop() ends the loop and later jobs stay queued", async () => {
    const { bus, worker } = setup();
    const jobs = await bus.queue("jobs");
    await jobs.publish(job(), { msgId: "first" });
    worker.start();
    worker.start();
    // The loop runs (one job done) and is back in a pull when stop() comes; stop() must end it.
    await until("the first job", () => worker.counters.jobsCompleted === 1);
    await worker.stop();
    await jobs.publish(job(), { msgId: "later" });
    await new Promise((r) => setTimeout(r, 50));
    expect(await jobs.pending()).toBe(1);
    expect(worker.counters.jobsCompleted).toBe(1);
  });
});
