/**
 * The Rollout's ScorerGuard against REAL misbehaving gRPC FeedbackServices started by the test
 * (test/helpers/misbehaving-feedback.ts, and a child process that crashes mid-call): a hung
 * scorer, one answering NaN/±Inf, the wrong count, per-token rewards of the wrong length, one
 * that crashes (then UNAVAILABLE), and one whose per-call batch limit is 3.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { FeedbackService, ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ScorerUnavailableError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { jitteredBackoffMs, ScorerGuard, type ScorerGuardOptions } from "../services/rollout/scorer-guard.js";
import {
  type MisbehavingOptions,
  type Misbehaviour,
  startMisbehavingFeedback,
} from "./helpers/misbehaving-feedback.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A misbehaving server and a guard on a real client of it; `logs` gets the guard's lines. */
async function guarded(server: MisbehavingOptions, guard: Partial<ScorerGuardOptions> = {}) {
  const fb = await startMisbehavingFeedback(server);
  const client = createClient(FeedbackService, fb.address, { defaultTimeoutMs: 10_000 });
  cleanups.push(
    () => fb.close(),
    () => client.close(),
  );
  const logs: string[] = [];
  const g = new ScorerGuard(client, {
    name: fb.address,
    timeoutMs: 2_000,
    retryMs: 1_000,
    backoffMs: 20,
    log: (l) => logs.push(l),
    ...guard,
  });
  return { fb, g, logs };
}

/** `n` items of distinct texts and keys. */
const items = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    prompt: "p",
    completion: `good text ${i}`,
    idempotencyKey: `r.1.0.${i}`,
  }));

describe("feedback resilience", () => {
  it("feedback resilience - full-jitter backoff is uniform below the doubling cap", () => {
    expect(jitteredBackoffMs(1, 200, () => 0.999)).toBeCloseTo(199.8);
    expect(jitteredBackoffMs(3, 200, () => 0.5)).toBe(400);
    expect(jitteredBackoffMs(10, 200, () => 0.999)).toBeLessThan(2_000);
    expect(jitteredBackoffMs(2, 200, () => 0)).toBe(0);
  });

  it("feedback resilience - a hung scorer gets DEADLINE_EXCEEDED at each deadline, 3 attempts, then its items fail (timed out)", async () => {
    const { fb, g, logs } = await guarded({ mode: "hang" }, { timeoutMs: 300, attempts: 3, random: () => 1 });
    const started = performance.now();
    const { res, failures } = await g.score(items(4), {});
    const elapsed = performance.now() - started;
    // 3 deadlines of 300 ms plus backoffs of at most 20 + 40 ms: bounded, not the retry budget.
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(900 + 60 + 1_500);
    expect(fb.batches).toEqual([4, 4, 4]);
    expect(res.scores.map((s) => s.status)).toEqual(new Array(4).fill(ScoreStatus.ERROR));
    expect(failures).toEqual(
      new Array(4).fill(`scorer ${fb.address} timed out after 3 attempts (300 ms each)`),
    );
    expect(logs.filter((l) => l.includes("retry"))).toHaveLength(2);
    expect(g.counters.timedOut).toBe(1);
  });

  for (const [mode, reason] of [
    ["nan", /scores\[0\]\.reward.*finite/],
    ["inf", /scores\[0\]\.reward.*finite/],
    ["wrong-count", /scores: .*exactly 3/],
    ["wrong-length", /scores\[0\]\.token_rewards.*entries for \d+ UTF-8 bytes/],
  ] as [Misbehaviour, RegExp][]) {
    it(`feedback resilience - a scorer answering ${mode} is rejected naming the scorer; its items fail at once, not retried`, async () => {
      const { fb, g } = await guarded({ mode });
      const { res, failures } = await g.score(items(3), {});
      expect(fb.batches).toEqual([3]);
      expect(res.scores.map((s) => s.status)).toEqual(new Array(3).fill(ScoreStatus.ERROR));
      for (const f of failures) {
        expect(f).toMatch(/^scorer "rule-afinn165[^"]*" v\S+ answered badly: /);
        expect(f).toMatch(reason);
      }
      expect(g.counters.badAnswers).toBe(1);
    });
  }

  it("feedback resilience - the circuit opens after K failures (items fail without a call), a probe after the cool-down closes it", async () => {
    const { fb, g, logs } = await guarded({ mode: "nan" }, { breakerFailures: 2, breakerCoolDownMs: 400 });
    await g.score(items(2), {});
    await g.score(items(2), {});
    expect(g.breaker.state).toBe("open");
    expect(
      logs.some((l) => /circuit open for 400 ms after 2 consecutive failures: .*answered badly/.test(l)),
    ).toBe(true);
    const refused = await g.score(items(2), {});
    expect(fb.batches).toHaveLength(2); // not called
    expect(refused.failures[0]).toMatch(
      new RegExp(
        `^scorer ${fb.address}: circuit open after 2 consecutive failures \\(last: .*answered badly`,
      ),
    );
    // The scorer is fixed; after the cool-down one probe goes through and closes the circuit.
    fb.mode = "ok";
    await new Promise((r) => setTimeout(r, 450));
    const probe = await g.score(items(2), {});
    expect(probe.failures).toEqual(["", ""]);
    expect(probe.res.scores.every((s) => Number.isFinite(s.reward))).toBe(true);
    expect(g.breaker.state).toBe("closed");
    expect(logs.some((l) => l.includes("circuit half-open"))).toBe(true);
    expect(logs.some((l) => l.includes("circuit closed"))).toBe(true);
  });

  it("feedback resilience - a failed probe re-opens the circuit for another cool-down", async () => {
    const { fb, g } = await guarded({ mode: "wrong-count" }, { breakerFailures: 1, breakerCoolDownMs: 200 });
    await g.score(items(2), {});
    await new Promise((r) => setTimeout(r, 250));
    await g.score(items(2), {}); // the probe, still wrong
    expect(fb.batches).toEqual([2, 2]);
    expect(g.breaker.state).toBe("open");
    expect((await g.score(items(2), {})).failures[0]).toMatch(/circuit open/);
    expect(fb.batches).toHaveLength(2);
  });

  it("feedback resilience - a scorer that crashes mid-call: retried for the budget, then ScorerUnavailableError; then the circuit opens", async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "helpers", "crashing-feedback.ts")],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    cleanups.push(() => {
      child.kill();
    });
    const [line] = (await once(
      createInterface({ input: child.stdout as NodeJS.ReadableStream }),
      "line",
    )) as [string];
    const address = (/listening on (\S+)/.exec(line) as RegExpExecArray)[1] as string;
    const client = createClient(FeedbackService, address, { defaultTimeoutMs: 5_000 });
    cleanups.push(() => client.close());
    const logs: string[] = [];
    const g = new ScorerGuard(client, {
      name: address,
      timeoutMs: 2_000,
      retryMs: 600,
      backoffMs: 50,
      breakerFailures: 2,
      breakerCoolDownMs: 60_000,
      log: (l) => logs.push(l),
    });
    for (let i = 0; i < 2; i++) {
      const err = await g.score(items(2), {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ScorerUnavailableError);
      expect((err as Error).message).toMatch(
        new RegExp(`^scorer ${address} unreachable for 600 ms: .*UNAVAILABLE`),
      );
    }
    expect(g.breaker.state).toBe("open");
    const started = performance.now();
    const refused = await g.score(items(2), {});
    expect(performance.now() - started).toBeLessThan(100);
    expect(refused.failures[0]).toMatch(/circuit open after 2 consecutive failures \(last: .*unreachable/);
  }, 30_000);

  it("feedback resilience - GetInfo is asked once per connection and a batch over its limit of 3 is split into calls of 3", async () => {
    const { fb, g } = await guarded({ mode: "ok", maxBatchItems: 3 });
    const sent = items(8);
    const { res, failures } = await g.score(sent, {});
    expect(fb.batches.sort()).toEqual([2, 3, 3]);
    expect(failures).toEqual(new Array(8).fill(""));
    // in order: each score echoes the key of its item
    expect(res.scores.map((s) => s.idempotencyKey)).toEqual(sent.map((x) => x.idempotencyKey));
    expect(res.scorerId).toMatch(/^rule-/);
    await g.score(items(3), {});
    expect(fb.infoCalls).toBe(1);
    expect(fb.batches).toHaveLength(4);
  });
});
