/**
 * Tracing: off by default (no config, no exporter), and on, a traced gRPC call exports its job,
 * client and server spans over real OTLP/HTTP (a node:http receiver on /v1/traces decoding the
 * OTLP/JSON body) under one trace id, each the child of the one before.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { ConfigError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import type { RunningServer } from "../services/core/src/grpc/server.js";
import { endSpan, startSpan, traceparentOf } from "../services/core/src/telemetry/spans.js";
import { startTracing, type Tracing, tracingConfig } from "../services/core/src/telemetry/tracing.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "./helpers/otlp-receiver.js";

describe("telemetry tracing", () => {
  let receiver: OtlpReceiver;
  let url: string;
  let spans: ReceivedSpan[];
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    url = receiver.url;
    spans = receiver.spans;
  });
  afterAll(() => receiver?.close());

  it("telemetry tracing - off by default: no endpoint, no tracing config", () => {
    const s = defaultConfig().services;
    expect(tracingConfig(s, "rlaif-policy", {})).toBeUndefined();
  });

  it("telemetry tracing - the endpoint comes from the setting, else OTEL_EXPORTER_OTLP_*", () => {
    const s = { otlpEndpoint: "http://c:4318/", otlpHeaders: "api-key=x%3Dy,team=ml" };
    expect(tracingConfig(s, "svc", {})).toEqual({
      url: "http://c:4318/v1/traces",
      headers: { "api-key": "x=y", team: "ml" },
      serviceName: "svc",
    });
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://env:4318", OTEL_EXPORTER_OTLP_HEADERS: "a=1" };
    expect(tracingConfig({ otlpEndpoint: "", otlpHeaders: "" }, "svc", env)).toEqual({
      url: "http://env:4318/v1/traces",
      headers: { a: "1" },
      serviceName: "svc",
    });
    expect(() => tracingConfig({ otlpEndpoint: "http://c", otlpHeaders: "novalue" }, "svc", {})).toThrow(
      ConfigError,
    );
  });

  it("telemetry tracing - a traced call exports job, client and server spans under one trace over OTLP/HTTP", async () => {
    const config = tracingConfig({ otlpEndpoint: url, otlpHeaders: "" }, "rlaif-test", {});
    const tracing: Tracing = startTracing(config as NonNullable<typeof config>);
    let server: RunningServer | undefined;
    try {
      server = await startFeedbackServer({ host: "127.0.0.1", port: 0 });
      const client = createClient(FeedbackService, server.address, { defaultTimeoutMs: 30_000 });
      const job = startSpan("rollout.job", undefined);
      await client.getInfo({}, { metadata: { traceparent: traceparentOf(job) } });
      endSpan(job);
      client.close();
      await tracing.flush();
    } finally {
      await server?.shutdown(1000);
      await tracing.shutdown();
    }
    const byName = (n: string) => spans.filter((s) => s.name === n);
    const [root] = byName("rollout.job");
    const rpc = byName("rlaif.feedback.v1.FeedbackService/GetInfo");
    expect(root).toBeDefined();
    const clientSide = rpc.find((s) => s.parentSpanId === root?.spanId);
    expect(clientSide).toBeDefined();
    const serverSide = rpc.find((s) => s.parentSpanId === clientSide?.spanId);
    expect(serverSide).toBeDefined();
    expect(new Set([root?.traceId, clientSide?.traceId, serverSide?.traceId]).size).toBe(1);
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(["rlaif-test"]));
  });
});
