/**
 * The embedded run's telemetry: `rlaif train --metrics-port` serves one /metrics for all four
 * services of the process (the Policy's worker thread included), scraped here by plain HTTP GETs
 * while the run trains; `--log-format json` makes every stderr line a JSON object; and with
 * `--otlp-endpoint` at a real OTLP/HTTP receiver one sample's trace runs from the prompt job
 * through the Policy thread's Generate server span.
 */
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ATTR } from "../services/core/src/telemetry/spans.js";
import {
  attributeOf,
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from "./helpers/otlp-receiver.js";
import { type RlaifResult, startRlaif } from "./helpers/spawn-rlaif.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const STEPS = 4;

/** A port free right now (the OS picks it; the run binds it moments later). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** The value of the first sample of `name` (with `labels` in its label set) in a Prometheus text page. */
function sample(page: string, name: string, labels = ""): number | undefined {
  for (const line of page.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

describe("train telemetry", () => {
  let result: RlaifResult;
  /** Every /metrics page scraped while the run trained, in order. */
  const pages: string[] = [];
  let outDir = "";
  let receiver: OtlpReceiver;

  beforeAll(async () => {
    const checkpoint = await writeTinyCheckpoint();
    outDir = join(checkpoint, "..", "runs");
    const port = await freePort();
    receiver = await startOtlpReceiver();
    const run = startRlaif([
      "train",
      ...["--checkpoint", checkpoint, "--backend", "wasm", "--out", outDir],
      ...["--steps", String(STEPS), "--prompts-per-step", "2", "--samples-per-prompt", "2"],
      ...["--max-new-tokens", "6", "--eval-prompts", "0"],
      ...["--metrics-port", String(port), "--log-format", "json", "--otlp-endpoint", receiver.url],
    ]);
    let running = true;
    const scraping = (async () => {
      while (running) {
        if (run.stderr().includes("metrics on http://")) {
          const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
          if (res?.ok) pages.push(await res.text());
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    result = await run.done;
    running = false;
    await scraping;
    await receiver.close();
  }, 240_000);

  it("train telemetry - /metrics of rlaif train shows the step count and reward, and the Policy thread's series", () => {
    expect(result.code, result.stderr).toBe(0);
    const trained = pages.filter((p) => sample(p, "rlaif_optimizer_step") !== undefined);
    expect(trained.length, `${pages.length} pages scraped, none after a step`).toBeGreaterThan(0);
    const last = trained.at(-1) as string;
    const step = sample(last, "rlaif_optimizer_step") as number;
    expect(step).toBeGreaterThanOrEqual(1);
    expect(step).toBeLessThanOrEqual(STEPS);
    expect(sample(last, "rlaif_optimizer_steps_total")).toBe(step);
    const [runId] = readdirSync(outDir);
    const lines = readFileSync(join(outDir, runId as string, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n");
    const atStep = lines
      .map((l) => JSON.parse(l) as { step: number; meanReward: number })
      .find((m) => m.step === step);
    expect(sample(last, "rlaif_optimizer_reward_mean", `run_id="${runId}"`)).toBe(atStep?.meanReward);
    // The Policy runs in a worker thread with its own registry: its series are on the same page.
    expect(sample(last, "rlaif_policy_weights_version")).toBeGreaterThanOrEqual(1);
    expect(sample(last, "rlaif_rpc_server_duration_seconds_count", "PolicyService/Generate")).toBeGreaterThan(
      0,
    );
    expect(sample(last, "rlaif_rpc_server_duration_seconds_count", "FeedbackService/Score")).toBeGreaterThan(
      0,
    );
    console.log(
      `rlaif train /metrics (${pages.length} scrapes): rlaif_optimizer_step=${step} rlaif_optimizer_reward_mean=${sample(last, "rlaif_optimizer_reward_mean")} rlaif_policy_weights_version=${sample(last, "rlaif_policy_weights_version")} (metrics.jsonl step ${atStep?.step}: meanReward ${atStep?.meanReward})`,
    );
  });

  it("train telemetry - --log-format json makes every stderr line one JSON object, step lines included", () => {
    const lines = result.stderr.trim().split("\n");
    expect(lines.filter((l) => !l.startsWith("{"))).toEqual([]);
    const records = lines.map((l) => JSON.parse(l) as Record<string, string>);
    for (const r of records) expect(r.service).toBe("rlaif-train");
    const msgs = records.map((r) => r.msg);
    expect(msgs).toContainEqual(
      expect.stringMatching(/^rlaif train: metrics on http:\/\/127\.0\.0\.1:\d+\/metrics$/),
    );
    expect(msgs).toContainEqual(expect.stringMatching(new RegExp(`^step ${STEPS}/${STEPS} reward`)));
    expect(msgs).toContainEqual(
      expect.stringMatching(new RegExp(`^run run-\\S+ \\(embedded\\): ${STEPS} steps`)),
    );
    // The Policy thread's swap line carries its swap span's trace id (forwarded with the line).
    const swap = records.find((r) => /^policy: now serving weights v2 /.test(r.msg ?? ""));
    expect(swap?.trace_id).toMatch(/^[0-9a-f]{32}$/);
    const span = receiver.spans.find(
      (s) => s.name === "weights swap" && attributeOf(s, ATTR.weightsVersion) === "2",
    );
    expect(span?.service).toBe("rlaif-train-policy");
    expect(swap?.trace_id).toBe(span?.traceId);
  });

  it("train telemetry - a --metrics-port in use is refused with exit 2 before any model loads", async () => {
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, "127.0.0.1", r));
    const { port } = held.address() as { port: number };
    try {
      const r = await startRlaif(["train", "--metrics-port", String(port), "--steps", "1"]).done;
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`port ${port} is in use: choose another --metrics-port`);
    } finally {
      await new Promise((r) => held.close(r));
    }
  });

  it("train telemetry - one sample's trace runs from the prompt job to the Policy thread's Generate", () => {
    const { spans } = receiver;
    const job = spans.find((s) => s.name === "rollout.job");
    expect(job, `no rollout.job among ${spans.length} spans`).toBeDefined();
    const byId = new Map(spans.filter((s) => s.traceId === job?.traceId).map((s) => [s.spanId, s]));
    const queued = byId.get(job?.parentSpanId ?? "");
    expect(queued?.name).toBe("prompt job publish");
    expect(queued?.service).toBe("rlaif-train");
    const generate = [...byId.values()].find(
      (s) => s.name.endsWith("PolicyService/Generate") && s.service === "rlaif-train-policy",
    ) as ReceivedSpan;
    expect(generate, "the Policy thread's server span").toBeDefined();
    expect(byId.get(byId.get(generate.parentSpanId ?? "")?.parentSpanId ?? "")).toBe(job);
  });
});
