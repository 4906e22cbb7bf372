/**
 * The ops HTTP server, the metric catalog against docs/metrics.md and the Grafana dashboard, the
 * bounded run_id cardinality and the RPC timing hook (the real scraper: metrics-prometheus.test.ts).
 */
import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StepMetricsSchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { REPO_ROOT } from "../services/core/src/config/settings.js";
import { METRIC_CATALOG, seriesNames } from "../services/core/src/ops/metric-catalog.js";
import { METRICS_REGISTRY, RUNS_KEPT, recordStep } from "../services/core/src/ops/metrics.js";
import { metricsRoutes, type OpsHttpServer, startOpsHttp } from "../services/core/src/ops/ops-http.js";
import { timedUnary } from "../services/core/src/ops/rpc-metrics.js";

const specs = Object.values(METRIC_CATALOG);

describe("ops metrics", () => {
  let ops: OpsHttpServer;
  let base = "";
  beforeAll(async () => {
    ops = await startOpsHttp({
      port: 0,
      routes: {
        ...metricsRoutes(),
        "/report": (_req, res) => {
          res.end("a mounted page");
        },
        "/broken": () => {
          throw new Error("boom");
        },
      },
    });
    base = `http://${ops.address}`;
  });
  afterAll(() => ops?.close());

  it("ops metrics - /metrics serves recorded step metrics in the Prometheus format, /healthz answers ok", async () => {
    recordStep(create(StepMetricsSchema, { runId: "run-http", step: 7, meanReward: 0.25, kl: 1.5 }), 2);
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain("# TYPE rlaif_optimizer_step gauge");
    expect(text).toContain('rlaif_optimizer_step{run_id="run-http"} 7');
    expect(text).toContain('rlaif_optimizer_reward_mean{run_id="run-http"} 0.25');
    expect(text).toContain('rlaif_optimizer_step_duration_seconds_bucket{le="2",run_id="run-http"} 1');
    // Only what this process recorded: no Policy or Rollout series in an optimizer-only process.
    expect(text).not.toContain("rlaif_policy_weights_version");
    const health = await fetch(`${base}/healthz`);
    expect([health.status, await health.text()]).toEqual([200, "ok\n"]);
  });

  it("ops metrics - other routes mount on the same port; unknown paths get 404, other methods 405, a failing page 500", async () => {
    expect(await (await fetch(`${base}/report?x=1`)).text()).toBe("a mounted page");
    const missing = await fetch(`${base}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain("/metrics, /healthz, /report");
    const post = await fetch(`${base}/metrics`, { method: "POST" });
    expect([post.status, post.headers.get("allow")]).toEqual([405, "GET, HEAD"]);
    expect((await fetch(`${base}/broken`)).status).toBe(500);
  });

  it("ops metrics - a taken port is refused with EADDRINUSE", async () => {
    await expect(startOpsHttp({ port: ops.port, routes: {} })).rejects.toThrow(/EADDRINUSE/);
  });

  it(`ops metrics - an Optimizer keeps the series of its ${RUNS_KEPT} newest runs only`, async () => {
    for (let i = 0; i <= RUNS_KEPT; i++) {
      recordStep(
        create(StepMetricsSchema, { runId: `run-${i}`, step: 1, excludedByCause: { abstained: 1 } }),
        1,
      );
    }
    const text = await METRICS_REGISTRY.metrics();
    expect(text).not.toContain('run_id="run-0"');
    for (let i = 1; i <= RUNS_KEPT; i++) expect(text).toContain(`rlaif_optimizer_step{run_id="run-${i}"} 1`);
    expect(text).toContain('rlaif_optimizer_samples_excluded_total{run_id="run-4",cause="abstained"} 1');
  });

  it("ops metrics - the RPC hook records each answer by method and status code name", async () => {
    const answered: unknown[] = [];
    timedUnary("/rlaif.test.v1.T/Ok", (err) => answered.push(err))(null, Buffer.alloc(0));
    const bad = { code: grpc.status.INVALID_ARGUMENT, details: "x" };
    timedUnary("/rlaif.test.v1.T/Bad", (err) => answered.push(err))(bad);
    expect(answered).toEqual([null, bad]);
    const text = await METRICS_REGISTRY.metrics();
    expect(text).toContain(
      'rlaif_rpc_server_duration_seconds_count{method="/rlaif.test.v1.T/Ok",code="OK"} 1',
    );
    expect(text).toContain(
      'rlaif_rpc_server_duration_seconds_count{method="/rlaif.test.v1.T/Bad",code="INVALID_ARGUMENT"} 1',
    );
  });

  it("ops metrics - docs/metrics.md lists every metric of the catalog with its type, unit, labels and service", () => {
    const doc = readFileSync(`${REPO_ROOT}docs/metrics.md`, "utf8");
    const rows = [...doc.matchAll(/^\| `(rlaif_\w+)` \| (\w+) \| ([^|]+) \| ([^|]+) \| (\w+) \|/gm)].map(
      (m) => ({
        name: m[1],
        type: m[2],
        unit: m[3]?.trim(),
        labels: m[4]?.trim() === "—" ? [] : (m[4]?.match(/`(\w+)`/g) ?? []).map((l) => l.slice(1, -1)),
        service: m[5],
      }),
    );
    expect(rows).toEqual(
      specs.map(({ name, type, unit, labels, service }) => ({
        name,
        type,
        unit,
        labels: [...labels],
        service,
      })),
    );
    for (const s of specs) expect(s.name).toMatch(/^rlaif_[a-z_]+$/);
  });

  it("ops metrics - every metric the Grafana dashboard queries is one the services export", () => {
    const dash = JSON.parse(readFileSync(`${REPO_ROOT}deploy/grafana/rlaif.json`, "utf8")) as {
      panels: { title: string; targets: { expr: string }[] }[];
      templating: { list: { query?: unknown }[] };
    };
    const exported = new Set(specs.flatMap(seriesNames));
    const exprs = [
      ...dash.panels.flatMap((p) => p.targets.map((t) => t.expr)),
      ...dash.templating.list.flatMap((v) =>
        typeof v.query === "object" && v.query ? [(v.query as { query: string }).query] : [],
      ),
    ];
    const used = new Set(exprs.flatMap((e) => e.match(/\brlaif_[A-Za-z0-9_:]*/g) ?? []));
    for (const e of exprs) expect(e.match(/\brlaif_\w+/), `"${e}" names no rlaif metric`).not.toBeNull();
    expect([...used].filter((n) => !exported.has(n))).toEqual([]);
    // The panels the issue asks for: reward and KL curves, throughput, staleness, failures,
    // replica versions, RPC latency.
    for (const name of [
      "rlaif_optimizer_reward_mean",
      "rlaif_optimizer_kl_nats",
      "rlaif_optimizer_tokens_per_second",
      "rlaif_optimizer_sample_staleness_versions",
      "rlaif_optimizer_samples_excluded_total",
      "rlaif_policy_weights_version",
      "rlaif_rpc_server_duration_seconds_bucket",
    ]) {
      expect(used.has(name), name).toBe(true);
    }
  });
});
