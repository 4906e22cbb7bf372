/**
 * The tracing acceptance test: a short distributed run (nats-server + one `rlaif serve` process
 * per service, as `rlaif up` starts them) with `--otlp-endpoint` at a real OTLP/HTTP receiver
 * shows, for one sample, spans from all four services under one trace id, each the child of the
 * span before: prompt job publish (optimizer) → rollout.job → Generate client → Generate server
 * (policy), Score client → server (feedback), Logprobs, trajectories publish → trajectory consume
 * (optimizer); the step span links to the consume spans, the weight publish is its child and
 * each replica's swap the publish's child. With `--log-format json` the log lines written inside
 * the publish and the swap carry those spans' trace and span ids.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalCluster, startLocalCluster } from "../services/cluster/local-cluster.js";
import { OptimizerService } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { runConfigFromSettings } from "../services/core/src/config/run-config.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { ATTR } from "../services/core/src/telemetry/spans.js";
import {
  attributeOf,
  durationMs,
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from "./helpers/otlp-receiver.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const hasNats = requireTool(TOOLS.natsServer);

const POLICY = "rlaif.policy.v1.PolicyService";
const FEEDBACK = "rlaif.feedback.v1.FeedbackService/Score";

describe.skipIf(!hasNats)("telemetry(distributed)", () => {
  let receiver: OtlpReceiver;
  let cluster: LocalCluster | undefined;
  let runId = "";
  const config = tinyRunConfig("");
  /** The processes' stderr lines, `[service] {json}`. */
  const logs: string[] = [];

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    const cfg = tinyRunConfig(await writeTinyCheckpoint());
    cfg.services.otlpEndpoint = receiver.url;
    cfg.services.logFormat = "json";
    cluster = await startLocalCluster(cfg, (line) => logs.push(line));
    const optimizer = createClient(OptimizerService, cluster.addresses.optimizer, {
      defaultTimeoutMs: 30_000,
    });
    ({ runId } = await optimizer.startRun({ config: runConfigFromSettings(cfg.run) }));
    for await (const _ of optimizer.watchMetrics({ runId }, { timeoutMs: 120_000 })) {
      // to the run's end
    }
    optimizer.close();
    // SIGTERM: each process drains and flushes the spans it still holds before it exits.
    await cluster.close();
    cluster = undefined;
  }, 180_000);

  afterAll(async () => {
    await cluster?.close();
    await receiver?.close();
  }, 60_000);

  it("telemetry(distributed) - one sample's trace holds spans of all four services, each the child of the one before", () => {
    const { spans } = receiver;
    const consume = spans.find(
      (s) => s.name === "trajectory consume" && attributeOf(s, ATTR.runId) === runId,
    );
    expect(consume, `no consume span among ${spans.length}`).toBeDefined();
    const trace = spans.filter((s) => s.traceId === consume?.traceId);
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    const parentOf = (s: ReceivedSpan | undefined) =>
      s?.parentSpanId ? byId.get(s.parentSpanId) : undefined;
    const one = (name: string, service: string, parent: ReceivedSpan | undefined) => {
      const found = trace.filter((s) => s.name === name && s.service === service && parentOf(s) === parent);
      expect(found.length, `${name} (${service}) under ${parent?.name}`).toBeGreaterThan(0);
      return found[0] as ReceivedSpan;
    };

    const publish = parentOf(consume);
    expect(publish?.name).toBe("trajectories publish");
    const job = parentOf(publish);
    expect(job?.name).toBe("rollout.job");
    expect(job?.service).toBe("rlaif-rollout");
    // The trace starts where the job was queued: the Optimizer's producer span is its root.
    const queued = parentOf(job);
    expect(queued?.name).toBe("prompt job publish");
    expect(queued?.service).toBe("rlaif-optimizer");
    expect(queued?.parentSpanId ?? "").toBe("");
    expect(attributeOf(queued as ReceivedSpan, ATTR.promptIndex)).toBe(
      attributeOf(job as ReceivedSpan, ATTR.promptIndex),
    );
    const generate = one(`${POLICY}/Generate`, "rlaif-rollout", job);
    one(`${POLICY}/Generate`, "rlaif-policy", generate);
    const score = one(FEEDBACK, "rlaif-rollout", job);
    one(FEEDBACK, "rlaif-feedback", score);
    const logprobs = one(`${POLICY}/Logprobs`, "rlaif-rollout", job);
    one(`${POLICY}/Logprobs`, "rlaif-policy", logprobs);
    expect(consume?.service).toBe("rlaif-optimizer");
    expect(new Set(trace.map((s) => s.service))).toEqual(
      new Set(["rlaif-rollout", "rlaif-policy", "rlaif-feedback", "rlaif-optimizer"]),
    );
    // Calls start after the job does and the consume after the publish.
    expect(BigInt(generate.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(job?.startTimeUnixNano ?? 0));
    expect(BigInt(consume?.startTimeUnixNano ?? 0)).toBeGreaterThanOrEqual(
      BigInt(publish?.startTimeUnixNano ?? 0),
    );

    // The step that applied the sample links to its consume span; its weight publish is its child.
    const steps = spans.filter((s) => s.name === "optimizer.step" && attributeOf(s, ATTR.runId) === runId);
    expect(steps.map((s) => attributeOf(s, ATTR.step)).sort()).toEqual(
      Array.from({ length: config.run.steps }, (_, i) => String(i + 1)),
    );
    const step = steps.find((s) => s.links?.some((l) => l.spanId === consume?.spanId));
    expect(step, "no step span links to the consume span").toBeDefined();
    expect(step?.links?.length).toBe(config.run.promptsPerStep * config.run.samplesPerPrompt);
    const weights = spans.find((s) => s.name === "weights publish" && s.parentSpanId === step?.spanId);
    expect(weights?.service).toBe("rlaif-optimizer");
    const version = attributeOf(weights as ReceivedSpan, ATTR.weightsVersion);
    expect(Number(attributeOf(step as ReceivedSpan, ATTR.weightsVersion))).toBe(Number(version) - 1);
    const swap = spans.find(
      (s) => s.name === "weights swap" && attributeOf(s, ATTR.weightsVersion) === version,
    );
    expect(swap?.service).toBe("rlaif-policy");
    // The swap is a span of the step: the manifest's traceparent names the publish span.
    expect(swap?.parentSpanId).toBe(weights?.spanId);
    expect(swap?.traceId).toBe(step?.traceId);
    expect(weights?.traceId).toBe(step?.traceId);

    // JSON log lines written inside a span carry that span's ids, as the receiver got them.
    const records = logs.flatMap((l): Record<string, string>[] => {
      const m = /^\[(\w+)\] (\{.*\})$/.exec(l);
      return m ? [{ proc: m[1] as string, ...(JSON.parse(m[2] as string) as Record<string, string>) }] : [];
    });
    const swapped = records.find(
      (r) => r.proc === "policy" && r.msg?.includes(`now serving weights v${version} `),
    );
    expect(swapped, "the replica's swap line").toBeDefined();
    expect(swapped?.trace_id).toBe(swap?.traceId);
    expect(swapped?.span_id).toBe(swap?.spanId);
    const published = records.find(
      (r) => r.proc === "optimizer" && r.msg?.includes(`published weights v${version} `),
    );
    expect(published?.trace_id).toBe(step?.traceId);
    expect(published?.span_id).toBe(weights?.spanId);
    // Lines outside any span (start-up, drain) name none.
    const listening = records.filter((r) => /draining|drained in/.test(r.msg ?? ""));
    expect(listening.length).toBeGreaterThan(0);
    for (const r of listening) expect(r.trace_id).toBeUndefined();

    const depth = (s: ReceivedSpan): number => (parentOf(s) ? 1 + depth(parentOf(s) as ReceivedSpan) : 0);
    const lines = [...trace]
      .sort((a, b) => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1))
      .map((s) => `${"  ".repeat(depth(s))}${s.name} [${s.service}] ${durationMs(s).toFixed(1)} ms`);
    const inStep = spans.filter((s) => s.traceId === step?.traceId);
    const stepDepth = (s: ReceivedSpan): number => {
      const p = inStep.find((x) => x.spanId === s.parentSpanId);
      return p ? 1 + stepDepth(p) : 0;
    };
    const stepTrace = inStep
      .sort((a, b) => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1))
      .map((s) => `  ${"  ".repeat(stepDepth(s))}${s.name} [${s.service}] ${durationMs(s).toFixed(1)} ms`);
    console.log(
      `one sample's trace ${consume?.traceId} (${trace.length} spans; step ${attributeOf(step as ReceivedSpan, ATTR.step)} links ${step?.links?.length}, publishes v${version}, swapped by ${swap?.service}):\n${lines.join("\n")}\n` +
        `its step's trace ${step?.traceId}:\n${stepTrace.join("\n")}\nlog line in the swap: ${JSON.stringify(swapped)}`,
    );
  });
});
