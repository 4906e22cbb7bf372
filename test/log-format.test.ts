/**
 * `--log-format`: text lines stay as they were; json gives one object per line with time, level,
 * service, run id, trace/span id and msg — checked on the formatter and on a real
 * `rlaif serve feedback --log-format json` process. A line written inside a span names it while
 * tracing is on (checked against a real OTLP/HTTP receiver), and names none while it is off.
 */
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { formatLine, levelOf, lineLogger } from "../services/core/src/telemetry/log-format.js";
import { endSpan, inSpan, startSpan, traceparentOf } from "../services/core/src/telemetry/spans.js";
import { startTracing } from "../services/core/src/telemetry/tracing.js";
import { startOtlpReceiver } from "./helpers/otlp-receiver.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";

const T = new Date("2026-12-03T11:30:00.123Z");

describe("log format", () => {
  it("log format - text is the default and writes the line unchanged", () => {
    expect(defaultConfig().services.logFormat).toBe("text");
    const out: string[] = [];
    lineLogger({ format: "text", service: "policy", write: (t) => out.push(t) })("policy: ready {x}");
    expect(out).toEqual(["policy: ready {x}\n"]);
  });

  it("log format - json writes one object per line with the fields in order", () => {
    const out: string[] = [];
    const log = lineLogger({
      format: "json",
      service: "optimizer",
      write: (t) => out.push(t),
      now: () => T,
      context: () => ({ runId: "r1", traceId: "a".repeat(32), spanId: "b".repeat(16) }),
    });
    log("step 3 done\nsecond line");
    expect(out).toHaveLength(1);
    expect(out[0]?.endsWith("\n")).toBe(true);
    expect(out[0]?.slice(0, -1)).not.toContain("\n");
    const record = JSON.parse(out[0] as string) as Record<string, string>;
    expect(Object.keys(record)).toEqual(["time", "level", "service", "run_id", "trace_id", "span_id", "msg"]);
    expect(record).toEqual({
      time: "2026-12-03T11:30:00.123Z",
      level: "info",
      service: "optimizer",
      run_id: "r1",
      trace_id: "a".repeat(32),
      span_id: "b".repeat(16),
      msg: "step 3 done\nsecond line",
    });
  });

  it("log format - json leaves unknown context out and finds a generated run id in the line", () => {
    const bare = JSON.parse(formatLine("json", "rollout", "job 7 scored", T)) as Record<string, string>;
    expect(Object.keys(bare)).toEqual(["time", "level", "service", "msg"]);
    const named = JSON.parse(
      formatLine("json", "optimizer", "run run-20261203113000-ab12cd failed: boom", T),
    ) as Record<string, string>;
    expect(named.run_id).toBe("run-20261203113000-ab12cd");
    expect(named.level).toBe("error");
    const words = JSON.parse(formatLine("json", "optimizer", "run finished", T)) as Record<string, string>;
    expect(words.run_id).toBeUndefined();
  });

  it("log format - a line logged inside a span (across awaits) names that span while tracing is on", async () => {
    const receiver = await startOtlpReceiver();
    const tracing = startTracing({
      url: `${receiver.url}/v1/traces`,
      headers: {},
      serviceName: "rlaif-test",
    });
    try {
      const out: string[] = [];
      const log = lineLogger({ format: "json", service: "rollout", write: (t) => out.push(t) });
      const span = startSpan("rollout.job", undefined);
      await inSpan(span, async () => {
        await new Promise((r) => setTimeout(r, 5));
        log("rollout: job 3 scored");
      });
      endSpan(span);
      log("rollout: idle");
      await tracing.flush();
      const [inside, outside] = out.map((l) => JSON.parse(l) as Record<string, string>);
      const got = receiver.spans.find((x) => x.name === "rollout.job");
      expect(got, "the receiver got the span").toBeDefined();
      expect(inside?.trace_id).toBe(got?.traceId);
      expect(inside?.span_id).toBe(got?.spanId);
      expect(outside?.trace_id).toBeUndefined();
    } finally {
      await tracing.shutdown();
      await receiver.close();
    }
  });

  it("log format - with tracing off a line logged inside a span carries no trace or span id", async () => {
    const out: string[] = [];
    const log = lineLogger({ format: "json", service: "rollout", write: (t) => out.push(t) });
    // A job whose header names a trace: the no-op tracer passes it through, but no backend has it.
    const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const span = startSpan("rollout.job", parent);
    expect(traceparentOf(span)).toBe(parent);
    await inSpan(span, async () => {
      await new Promise((r) => setTimeout(r, 1));
      log("rollout: job 3 scored");
    });
    endSpan(span);
    const record = JSON.parse(out[0] as string) as Record<string, string>;
    expect(Object.keys(record)).toEqual(["time", "level", "service", "msg"]);
  });

  it("log format - level follows the words of the line", () => {
    expect(levelOf("optimizer: cannot write run-end.json: EACCES")).toBe("error");
    expect(levelOf("rollout: Feedback timed out; retrying job 3 in 500 ms")).toBe("warn");
    expect(levelOf("policy: weights v4 swapped in")).toBe("info");
  });

  it("log format - rlaif serve --log-format json writes its log lines to stderr as JSON", async () => {
    const run = startRlaif(["serve", "feedback", "--port", "0", "--log-format", "json"]);
    const lines = createInterface({ input: run.child.stdout });
    const [line] = (await Promise.race([
      once(lines, "line"),
      run.done.then((r) => {
        throw new Error(`serve exited before it listened: ${r.stderr}`);
      }),
    ])) as [string];
    expect(line).toMatch(/^feedback listening on /);
    run.child.kill("SIGTERM");
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    const records = r.stderr
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(records.length).toBeGreaterThanOrEqual(2);
    for (const rec of records) {
      expect(rec.service).toBe("feedback");
      // Tracing is off: no line names a trace.
      expect(rec.trace_id).toBeUndefined();
      expect(Number.isNaN(Date.parse(rec.time as string))).toBe(false);
    }
    expect(records.map((x) => x.msg)).toContainEqual(expect.stringMatching(/^feedback: SIGTERM: draining/));
    expect(records.map((x) => x.msg)).toContainEqual(expect.stringMatching(/^feedback: drained in/));
  });

  it("log format - an unknown --log-format is refused with exit 2 naming the choices", async () => {
    const r = await startRlaif(["serve", "feedback", "--port", "0", "--log-format", "xml"]).done;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/log-format/);
    expect(r.stderr).toMatch(/text.*json|json.*text/);
  });
});
