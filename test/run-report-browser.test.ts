/**
 * The run report in a real browser: a short real `rlaif train` (tiny model, one training prompt
 * carrying a <script> element), then Debian's chromium, driven by playwright-core, opens the
 * report.html it wrote from a file:// URL (offline) and finds every chart drawn with one point
 * per step, the sample table, the script text shown as text and never run; it takes a
 * screenshot into the test's temp dir. The live page is opened through its route too.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPORT_PATH, reportRoutes } from "../services/optimizer/report-live.js";
import { readSamples } from "../services/optimizer/step-samples.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const hasChromium = requireTool(TOOLS.chromium);
const EVIL = "Say <script>window.pwned=1</script>";
const STEPS = 3;
const CHARTS = ["reward", "kl", "entropy", "completion-length", "clip-fraction", "excluded", "learning-rate"];

describe.skipIf(!hasChromium)("run report in chromium", () => {
  let browser: Browser;
  let runDir: string;
  let tmp: string;
  let trainErr: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "rlaif-report-browser-"));
    const checkpoint = await writeTinyCheckpoint(7);
    const r = spawnSync(
      process.execPath,
      [
        RLAIF_BIN,
        "train",
        "--checkpoint",
        checkpoint,
        "--backend",
        "wasm",
        "--out",
        join(tmp, "runs"),
        "--steps",
        String(STEPS),
        "--prompts-per-step",
        "2",
        "--samples-per-prompt",
        "2",
        "--max-new-tokens",
        "6",
        "--prompt",
        "The film was",
        "--prompt",
        EVIL,
        "--eval-prompts",
        "2",
      ],
      { encoding: "utf8", timeout: 120_000 },
    );
    trainErr = r.stderr;
    expect(r.status, r.stderr).toBe(0);
    const [id] = readdirSync(join(tmp, "runs"));
    runDir = join(tmp, "runs", id ?? "");
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
  });

  it("run report - rlaif train prints the report's path; chromium draws every chart with one point per step, the samples, the script as text", async () => {
    const file = join(runDir, "report.html");
    expect(trainErr).toContain(`run report: ${file} (`);
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const requests: string[] = [];
    page.on("request", (req) => requests.push(req.url()));
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(pathToFileURL(file).href);
    await page.waitForSelector("body[data-charts-ready=true]", { timeout: 30_000 });
    expect(errors).toEqual([]);
    // Offline: the page itself is the only thing loaded.
    expect(requests).toEqual([pathToFileURL(file).href]);
    for (const id of CHARTS) {
      const chart = page.locator(`#chart-${id}`);
      expect(await chart.getAttribute("data-points"), id).toBe(String(STEPS));
      expect(await chart.getAttribute("data-rendered-points"), id).toBe(String(STEPS));
      expect(await chart.locator("canvas").count(), id).toBe(1);
    }
    expect(await page.locator("#chart-reward").getAttribute("data-rendered-series")).toBe("3");
    // The sample table: every stored sample of every step, each step's best and worst marked.
    const stored = readSamples(runDir);
    expect(stored.map((s) => s.step)).toEqual([1, 2, 3]);
    const rows = page.locator("#samples tbody tr");
    expect(await rows.count()).toBe(stored.reduce((n, s) => n + s.samples.length, 0));
    expect(await page.locator("#samples tr.pick-best").count()).toBe(STEPS);
    expect(await page.locator("#extremes tbody tr").count()).toBe(2);
    // The <script> of the prompt is shown as text and never ran.
    expect(await page.evaluate(() => (globalThis as { pwned?: number }).pwned)).toBeUndefined();
    expect(await page.locator("#samples td.text", { hasText: EVIL }).count()).toBeGreaterThan(0);
    expect(await page.locator("#prompts li", { hasText: EVIL }).count()).toBe(1);
    // Held-out before/after and provenance.
    expect(await page.locator("#held-out-summary tbody tr").count()).toBe(2);
    expect(await page.locator("#held-out-samples tbody tr").count()).toBeGreaterThan(0);
    expect(await page.locator("#provenance").textContent()).toMatch(
      /model\s*\S+tiny\.safetensors \(sha256 [0-9a-f]{64}\)/,
    );
    const shot = join(tmp, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    const png = readFileSync(shot);
    expect(png.subarray(1, 4).toString()).toBe("PNG");
    console.log(
      `run report: ${file} ${statSync(file).size} bytes; screenshot ${shot} ${png.length} bytes, ${png.readUInt32BE(16)}×${png.readUInt32BE(20)} px`,
    );
    await page.close();
  }, 120_000);

  it("run report - the live route's page draws the same charts in chromium", async () => {
    const routes = reportRoutes({ runDir: () => runDir });
    const server = createServer((req, res) => {
      const handler = routes[req.url ?? ""];
      if (handler) handler(req, res);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}${REPORT_PATH}`);
      await page.waitForSelector("body[data-charts-ready=true]", { timeout: 30_000 });
      expect(errors).toEqual([]);
      for (const id of CHARTS)
        expect(await page.locator(`#chart-${id}`).getAttribute("data-rendered-points"), id).toBe(
          String(STEPS),
        );
      await page.close();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  }, 60_000);
});
