/**
 * The run report (docs/run-report.md): the per-step sample table (samples.jsonl), the page's
 * escaping of untrusted text and its chart data, `rlaif report`, and the live route on a plain
 * node:http server. The page in a real browser: run-report-browser.test.ts.
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { StepMetricsSchema, TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { escapeHtml, renderReportHtml, reportCharts, scriptJson } from "../services/optimizer/report-html.js";
import { REPORT_PATH, reportRoutes } from "../services/optimizer/report-live.js";
import {
  FINAL_CHECKPOINT,
  METRICS_FILE,
  metricsLine,
  writeFileAtomic,
} from "../services/optimizer/run-files.js";
import { loadRunReport } from "../services/optimizer/run-report.js";
import {
  readSamples,
  SAMPLES_FILE,
  samplesLine,
  samplesUpTo,
  stepSamples,
} from "../services/optimizer/step-samples.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";

const EVIL = "<script>window.pwned=1</script>";

/** A trajectory of `reward` with `tokens` completion tokens, each 0.1 nats off the reference. */
const traj = (id: string, reward: number, tokens = 3, completion = `c-${id}`, sampleIndex = 0) =>
  create(TrajectorySchema, {
    id,
    sampleIndex,
    prompt: `p-${id}`,
    completion,
    reward,
    completionTokens: Array.from({ length: tokens }, (_, i) => i + 1),
    behaviourLogprobs: Array.from({ length: tokens }, () => -1),
    referenceLogprobs: Array.from({ length: tokens }, () => -1.1),
  });

/** A run directory as the Optimizer writes it, with `steps` steps, one completion being EVIL. */
function fixtureRun(steps: number, ended: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), "rlaif-report-"));
  writeFileAtomic(
    join(dir, "config.json"),
    JSON.stringify({ runId: "run-fixture", steps, learningRate: 0.001, prompts: [EVIL, "fine"] }),
  );
  for (let s = 1; s <= steps; s++) {
    const m = create(StepMetricsSchema, {
      runId: "run-fixture",
      step: s,
      meanReward: s / 10,
      stdReward: 0.2,
    });
    appendFileSync(join(dir, METRICS_FILE), metricsLine(m));
    const trajs = [
      traj(`${s}a`, 1, 4, EVIL, 0),
      traj(`${s}b`, -1, 2, `c${s}b`, 1),
      traj(`${s}c`, 0, 3, `c${s}c`, 2),
    ];
    appendFileSync(join(dir, SAMPLES_FILE), samplesLine(stepSamples(s, trajs)));
  }
  if (ended) writeFileSync(join(dir, FINAL_CHECKPOINT), "weights");
  return dir;
}

describe("run report", () => {
  it("run report - a step's line keeps the best, the worst and 3 others in a stable order, with completion lengths", () => {
    const trajs = [0.2, 0.9, -0.5, 0.1, 0.3, 0.0, 0.4].map((r, i) => traj(`t${i}`, r, i + 1, `c${i}`, i));
    const line = stepSamples(4, trajs);
    expect(line.samples.map((s) => s.pick)).toEqual(["best", "worst", "random", "random", "random"]);
    expect(line.samples[0]?.reward).toBe(0.9);
    expect(line.samples[1]?.reward).toBe(-0.5);
    expect(line.trajectories).toBe(7);
    expect(line.meanCompletionTokens).toBe(4);
    expect(line.maxCompletionTokens).toBe(7);
    // KL of one sample: 3 tokens × 0.1 nats (float32 log-probs)
    expect(line.samples[0]?.kl).toBeCloseTo(0.2, 5);
    // The same trajectories in another order, under other ids (a resumed run's bus run id), pick
    // the same samples: a re-run step writes the same line.
    const rerun = [...trajs].reverse().map((t) => ({ ...t, id: `resumed-${t.id}` }));
    expect(stepSamples(4, rerun)).toEqual(line);
    // Ties go to the first job.
    const tied = stepSamples(2, [traj("b", 1, 3, "second", 1), traj("a", 1, 3, "first", 0)]);
    expect(tied.samples.map((s) => [s.pick, s.completion])).toEqual([
      ["best", "first"],
      ["random", "second"],
    ]);
    // One trajectory is both the best and the worst: listed once.
    expect(stepSamples(1, [traj("x", 0)]).samples.map((s) => s.pick)).toEqual(["best"]);
  });

  it("run report - a resumed run's samples.jsonl is cut back to its step, torn and repeated lines dropped", () => {
    const dir = fixtureRun(4, false);
    appendFileSync(
      join(dir, SAMPLES_FILE),
      `${samplesLine(stepSamples(2, [traj("again", 5)]))}{"step":5,"sam`,
    );
    expect(readSamples(dir).map((s) => s.step)).toEqual([1, 2, 3, 4]);
    const kept = samplesUpTo(dir, 2);
    expect(kept.map((s) => s.step)).toEqual([1, 2]);
    expect(kept[1]?.samples[0]?.reward).toBe(1); // the first line of step 2, not the repeat
    expect(readFileSync(join(dir, SAMPLES_FILE), "utf8").trim().split("\n")).toHaveLength(2);
  });

  it("run report - untrusted text is escaped in the markup and in the embedded data", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    expect(scriptJson({ t: "</script><script>" })).not.toContain("<");
    const html = renderReportHtml(loadRunReport(fixtureRun(3, true)));
    expect(html).not.toContain(EVIL);
    expect(html).toContain(escapeHtml(EVIL));
    // The only script elements are the page's own three (uPlot, the data, the drawing code).
    expect(html.match(/<script/g)).toHaveLength(3);
    // Nothing is fetched at view time.
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/);
    expect(html).toContain('id="samples"');
  });

  it("run report - every chart has one point per recorded step, reward with its std band", () => {
    const data = loadRunReport(fixtureRun(5, true));
    const charts = reportCharts(data);
    expect(charts.map((c) => c.id)).toEqual([
      "reward",
      "kl",
      "entropy",
      "completion-length",
      "clip-fraction",
      "excluded",
      "learning-rate",
    ]);
    for (const c of charts) {
      expect(c.steps, c.id).toEqual([1, 2, 3, 4, 5]);
      for (const s of c.series) expect(s.values, `${c.id} ${s.label}`).toHaveLength(5);
    }
    const reward = charts[0];
    expect(reward?.series.map((s) => s.values[2])).toEqual([0.3, 0.3 - 0.2, 0.3 + 0.2]);
    expect(charts[3]?.series[0]?.values[0]).toBe(3); // (4 + 2 + 3) / 3 completion tokens
    const html = renderReportHtml(data);
    for (const c of charts) expect(html).toContain(`data-chart="${c.id}" data-points="5"`);
    // An ended run's page does not reload itself.
    expect(html).not.toContain("http-equiv");
  });

  it("run report - rlaif report writes the page and prints its path; a directory that is not a run exits 2", () => {
    const dir = fixtureRun(2, true);
    const out = join(dir, "elsewhere.html");
    const r = spawnSync(process.execPath, [RLAIF_BIN, "report", dir, "--out", out], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^rlaif report: ${out} \\(\\d+\\.\\d kB\\)\\n$`));
    expect(readFileSync(out, "utf8")).toContain("rlaif run <code>run-fixture</code>");
    const plain = spawnSync(process.execPath, [RLAIF_BIN, "report", dir], { encoding: "utf8" });
    expect(plain.status).toBe(0);
    expect(existsSync(join(dir, "report.html"))).toBe(true);
    const empty = mkdtempSync(join(tmpdir(), "rlaif-report-empty-"));
    const bad = spawnSync(process.execPath, [RLAIF_BIN, "report", empty], { encoding: "utf8" });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("holds neither config.json nor metrics.jsonl: pass a run directory");
    const none = spawnSync(process.execPath, [RLAIF_BIN, "report"], { encoding: "utf8" });
    expect(none.status).toBe(2);
  });

  describe("live route", () => {
    let runDir: string | null = null;
    const routes = reportRoutes({ runDir: () => runDir, refreshSeconds: 7 });
    const server: Server = createServer((req, res) => {
      const handler = routes[new URL(req.url ?? "/", "http://x").pathname];
      if (handler) handler(req, res);
      else res.writeHead(404).end();
    });
    const url = async () => {
      if (!server.listening) await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}${REPORT_PATH}`;
    };
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    it("run report - the live route answers 404 before a run, the reloading page of a running run, 405 for POST", async () => {
      const before = await fetch(await url());
      expect(before.status).toBe(404);
      expect(await before.text()).toContain("no run has started");
      runDir = fixtureRun(2, false);
      const live = await fetch(await url());
      expect(live.status).toBe(200);
      expect(live.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(live.headers.get("content-security-policy")).toContain("default-src 'none'");
      const page = await live.text();
      expect(page).toContain('<meta http-equiv="refresh" content="7">');
      expect(page).toContain('data-chart="kl" data-points="2"');
      // Made afresh per request: a new step shows up on the next load.
      appendFileSync(join(runDir, METRICS_FILE), metricsLine(create(StepMetricsSchema, { step: 3 })));
      expect(await (await fetch(await url())).text()).toContain('data-chart="kl" data-points="3"');
      writeFileSync(join(runDir, FINAL_CHECKPOINT), "weights");
      expect(await (await fetch(await url())).text()).not.toContain("http-equiv");
      const post = await fetch(await url(), { method: "POST" });
      expect(post.status).toBe(405);
      expect(post.headers.get("allow")).toBe("GET, HEAD");
    });
  });
});
