/**
 * The Prometheus endpoints against a real scraper: Debian's `prometheus` server, started here
 * with a generated config (scrape every 1 s) pointing at the four service processes of a short
 * distributed run (`rlaif up`'s local cluster), scrapes them; the test then asks its HTTP API
 * for the run's step count and reward and finds metrics.jsonl's last values.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalCluster, startLocalCluster } from "../services/cluster/local-cluster.js";
import { OptimizerService } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { freePort } from "../services/core/src/bus/nats-server.js";
import { runConfigFromSettings } from "../services/core/src/config/run-config.js";
import { REPO_ROOT } from "../services/core/src/config/settings.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const hasTools = requireTool(TOOLS.natsServer) && requireTool(TOOLS.prometheus);

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describe.skipIf(!hasTools)("metrics(prometheus)", () => {
  let cluster: LocalCluster;
  let prometheus: ChildProcess;
  let promUrl = "";
  let outDir = "";
  const dir = mkdtempSync(join(tmpdir(), "rlaif-prometheus-"));

  /** The samples of an instant query (throws on an API error). */
  const query = async (q: string): Promise<Sample[]> => {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await res.json()) as { status: string; error?: string; data: { result: Sample[] } };
    if (body.status !== "success") throw new Error(`prometheus: ${q}: ${body.error}`);
    return body.data.result;
  };
  /** Poll `q` until `ok` holds for its samples (Prometheus scrapes every second). */
  const until = async (q: string, ok: (r: Sample[]) => boolean, ms = 30_000): Promise<Sample[]> => {
    const end = Date.now() + ms;
    for (;;) {
      const r = await query(q).catch(() => [] as Sample[]);
      if (ok(r) || Date.now() > end) return r;
      await new Promise((res) => setTimeout(res, 250));
    }
  };

  beforeAll(async () => {
    const config = tinyRunConfig(await writeTinyCheckpoint());
    outDir = config.out;
    cluster = await startLocalCluster(config, () => {});
    const targets = Object.entries(cluster.metricsAddresses).map(
      ([service, address]) =>
        `  - job_name: ${service}\n    static_configs:\n      - targets: ["${address}"]\n`,
    );
    writeFileSync(
      join(dir, "prometheus.yml"),
      `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n${targets.join("")}`,
    );
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      "prometheus",
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: "ignore" },
    );
    const ready = Date.now() + 30_000;
    while (
      !(await fetch(`${promUrl}/-/ready`).then(
        (r) => r.ok,
        () => false,
      ))
    ) {
      if (Date.now() > ready) throw new Error("prometheus did not get ready in 30 s");
      await new Promise((res) => setTimeout(res, 200));
    }
  }, 180_000);
  afterAll(async () => {
    prometheus?.kill("SIGTERM");
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("metrics(prometheus) - a real Prometheus scrapes all four services and finds the run's step count and reward, and answers every dashboard query", async () => {
    expect(Object.keys(cluster.metricsAddresses).sort()).toEqual([
      "feedback",
      "optimizer",
      "policy",
      "rollout",
    ]);
    const up = await until("up", (r) => r.length === 4 && r.every((s) => s.value[1] === "1"));
    expect(up.map((s) => `${s.metric.job}=${s.value[1]}`).sort()).toEqual([
      "feedback=1",
      "optimizer=1",
      "policy=1",
      "rollout=1",
    ]);

    const optimizer = createClient(OptimizerService, cluster.addresses.optimizer, {
      defaultTimeoutMs: 30_000,
    });
    const config = tinyRunConfig("");
    const { runId } = await optimizer.startRun({ config: runConfigFromSettings(config.run) });
    for await (const _ of optimizer.watchMetrics({ runId }, { timeoutMs: 120_000 })) {
      // to the run's end
    }
    optimizer.close();
    const lines = readFileSync(join(outDir, runId, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n");
    const last = JSON.parse(lines.at(-1) as string) as { step: number; meanReward: number; kl: number };
    const run = `run_id="${runId}"`;

    const step = await until(`rlaif_optimizer_step{${run}}`, (r) => Number(r[0]?.value[1]) === last.step);
    expect(Number(step[0]?.value[1])).toBe(last.step);
    expect(last.step).toBe(config.run.steps);
    const steps = await query(`rlaif_optimizer_steps_total{${run}}`);
    expect(Number(steps[0]?.value[1])).toBe(lines.length);
    const reward = await query(`rlaif_optimizer_reward_mean{${run}}`);
    expect(Number(reward[0]?.value[1])).toBe(last.meanReward);
    const kl = await query(`rlaif_optimizer_kl_nats{${run}}`);
    expect(Number(kl[0]?.value[1])).toBe(last.kl);
    console.log(
      `prometheus: rlaif_optimizer_step=${step[0]?.value[1]} rlaif_optimizer_steps_total=${steps[0]?.value[1]} rlaif_optimizer_reward_mean=${reward[0]?.value[1]} rlaif_optimizer_kl_nats=${kl[0]?.value[1]} (metrics.jsonl: step ${last.step}, meanReward ${last.meanReward}, kl ${last.kl})`,
    );

    // The other services' figures: the replica's version, the Rollout's jobs, Feedback's items,
    // and server-side RPC latency from every service.
    // The replica swaps after the publish and Prometheus scrapes each second: wait until its
    // scraped version has caught up with the published one (a lag is not a failure; a mismatch
    // that persists is).
    const published = await query(`rlaif_optimizer_weights_version{${run}}`);
    const target = Number(published[0]?.value[1]);
    const version = await until("rlaif_policy_weights_version", (r) => Number(r[0]?.value[1]) >= target);
    expect(Number(version[0]?.value[1])).toBe(Number(published[0]?.value[1]));
    const jobs = await until(
      'rlaif_rollout_jobs_total{outcome="completed"}',
      (r) => Number(r[0]?.value[1]) === config.run.steps * config.run.promptsPerStep,
    );
    expect(Number(jobs[0]?.value[1])).toBe(config.run.steps * config.run.promptsPerStep);
    const scored = await until('rlaif_feedback_items_scored_total{status="ok"}', (r) => r.length === 1);
    expect(Number(scored[0]?.value[1])).toBeGreaterThanOrEqual(
      config.run.steps * config.run.promptsPerStep * config.run.samplesPerPrompt,
    );
    const rpcJobs = await query("sum by (job) (rlaif_rpc_server_duration_seconds_count)");
    expect(rpcJobs.map((s) => s.metric.job).sort()).toEqual(["feedback", "optimizer", "policy"]);
    const publishes = await query(`rlaif_optimizer_weights_publish_seconds_count{${run}}`);
    expect(Number(publishes[0]?.value[1])).toBeGreaterThanOrEqual(config.run.steps);
    console.log(
      `prometheus: policy v${version[0]?.value[1]}, rollout jobs completed ${jobs[0]?.value[1]}, feedback items ok ${scored[0]?.value[1]}, rpc calls by job ${rpcJobs.map((s) => `${s.metric.job}=${s.value[1]}`).join(" ")}, weights publishes ${publishes[0]?.value[1]}`,
    );

    // Every query of the Grafana dashboard is PromQL this Prometheus accepts, over the run's data.
    const dash = JSON.parse(readFileSync(join(REPO_ROOT, "deploy/grafana/rlaif.json"), "utf8")) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    // Series that exist only once something fails (exclusions, drops, dead letters, scorer
    // timeouts are absent from a healthy run); every other query has data once rate() has two
    // scrapes of each series.
    const onFailure = /excluded|dropped|dead_letters|scorer_timeouts/;
    const empty: string[] = [];
    for (const panel of dash.panels) {
      for (const { expr } of panel.targets) {
        const q = expr.replaceAll("$run_id", runId);
        const r = onFailure.test(expr) ? await query(q) : await until(q, (x) => x.length > 0, 15_000);
        if (r.length === 0 && !onFailure.test(expr)) empty.push(`${panel.title}: ${expr}`);
      }
    }
    expect(empty).toEqual([]);

    // The Optimizer's ops port also serves the run's live report page (report-live.ts).
    const page = await fetch(`http://${cluster.metricsAddresses.optimizer}/report`);
    const html = await page.text();
    expect(page.status, html.slice(0, 200)).toBe(200);
    expect(html).toContain(runId);
  }, 180_000);
});
