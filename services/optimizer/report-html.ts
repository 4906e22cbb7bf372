/**
 * The run report as ONE self-contained HTML page: uPlot's script and stylesheet are read from
 * node_modules when the page is made and inlined, the data goes in as JSON, so the file opens
 * offline, copied anywhere, with nothing fetched at view time. Every text from the run
 * (prompts, completions, settings, paths) is escaped: completions are model output, untrusted.
 * Each chart's element carries `data-points` (steps with data) and, once uPlot has drawn it,
 * `data-rendered-points` (what uPlot holds), so a browser test can check both.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { HeldOutView, RunReportData } from "./run-report.js";
import { RANDOM_SAMPLES_PER_STEP, type StoredSample } from "./step-samples.js";

/** One chart: x = steps, one or more series; `band` draws mean ± std from series 2 and 3. */
export interface ChartSpec {
  id: string;
  title: string;
  steps: number[];
  series: { label: string; values: (number | null)[] }[];
  band?: boolean;
}

/** Options of a page. */
export interface ReportHtmlOptions {
  /** Reload the page every this many seconds (the live page of a running run); 0: never. */
  refreshSeconds?: number;
}

const require = createRequire(import.meta.url);

/** uPlot's minified script and stylesheet and its version, read once per process. */
let uplotAssets: { js: string; css: string; version: string } | null = null;
function uplot(): { js: string; css: string; version: string } {
  if (!uplotAssets) {
    const pkg = require.resolve("uplot/package.json");
    const dir = pkg.slice(0, -"package.json".length);
    uplotAssets = {
      js: readFileSync(`${dir}dist/uPlot.iife.min.js`, "utf8"),
      css: readFileSync(`${dir}dist/uPlot.min.css`, "utf8"),
      version: (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version,
    };
  }
  return uplotAssets;
}

/** Text as HTML: the five characters that could open markup or end an attribute, escaped. */
export function escapeHtml(text: unknown): string {
  return String(text)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** JSON that is safe inside a <script> element: no "<" (so no "</script>"), no U+2028/9. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);

/** The charts of a run: one per metric, x = the step. */
export function reportCharts(data: RunReportData): ChartSpec[] {
  const steps = data.metrics.map((m) => Number(m.step));
  const field = (name: string) => data.metrics.map((m) => num(m[name]));
  const mean = field("meanReward");
  const std = field("stdReward");
  const around = (sign: number) => mean.map((m, i) => (m === null ? null : m + sign * (std[i] ?? 0)));
  const one = (id: string, title: string, name: string, label = title): ChartSpec => ({
    id,
    title,
    steps,
    series: [{ label, values: field(name) }],
  });
  return [
    {
      id: "reward",
      title: "Reward (mean ± std)",
      steps,
      band: true,
      series: [
        { label: "mean", values: mean },
        { label: "mean − std", values: around(-1) },
        { label: "mean + std", values: around(1) },
      ],
    },
    one("kl", "KL to the reference (nats per sample)", "kl", "KL"),
    one("entropy", "Entropy (nats per token)", "entropy", "entropy"),
    {
      id: "completion-length",
      title: "Completion length (tokens)",
      steps: data.samples.map((s) => s.step),
      series: [
        { label: "mean", values: data.samples.map((s) => num(s.meanCompletionTokens)) },
        { label: "max", values: data.samples.map((s) => num(s.maxCompletionTokens)) },
      ],
    },
    one("clip-fraction", "Clip fraction", "clipFraction", "clipped share"),
    one("excluded", "Excluded samples", "excluded", "excluded"),
    one("learning-rate", "Learning rate", "learningRate", "learning rate"),
  ];
}

const fixed = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : "–");

function sampleRow(step: number | string, s: StoredSample): string {
  return (
    `<tr class="pick-${s.pick}" data-step="${escapeHtml(step)}"><td>${escapeHtml(step)}</td><td>${s.pick}</td>` +
    `<td class="text">${escapeHtml(s.prompt)}</td><td class="text">${escapeHtml(s.completion)}</td>` +
    `<td class="n">${fixed(s.reward)}</td><td class="n">${fixed(s.kl)}</td><td class="n">${s.tokens}</td></tr>`
  );
}

const SAMPLE_HEAD =
  "<thead><tr><th>step</th><th>pick</th><th>prompt</th><th>completion</th><th>reward</th><th>KL</th><th>tokens</th></tr></thead>";

/** The best and worst sample of the whole run, then every step's table, newest step first. */
function samplesSection(data: RunReportData): string {
  if (data.samples.length === 0)
    return `<p class="none">No samples recorded (samples.jsonl is missing or empty).</p>`;
  const all = data.samples.flatMap((s) => s.samples.map((x) => ({ step: s.step, x })));
  const best = all.reduce((a, b) => (b.x.reward > a.x.reward ? b : a));
  const worst = all.reduce((a, b) => (b.x.reward < a.x.reward ? b : a));
  const extremes = [
    sampleRow(best.step, { ...best.x, pick: "best" }),
    sampleRow(worst.step, { ...worst.x, pick: "worst" }),
  ].join("");
  const rows = [...data.samples]
    .reverse()
    .flatMap((s) => s.samples.map((x) => sampleRow(s.step, x)))
    .join("\n");
  return (
    `<h3>Best and worst of the run</h3><table id="extremes">${SAMPLE_HEAD}<tbody>${extremes}</tbody></table>` +
    `<h3>Per step (best, worst and up to ${RANDOM_SAMPLES_PER_STEP} others of each step, newest first)</h3>` +
    `<table id="samples">${SAMPLE_HEAD}<tbody>\n${rows}\n</tbody></table>`
  );
}

function heldOutSection(h: HeldOutView | null): string {
  if (!h) return `<p class="none">No held-out evaluation in this run directory (held-out.json).</p>`;
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  const side = (name: string, s: HeldOutView["before"]) =>
    `<tr><td>${name}</td><td class="n">${fixed(s.meanReward)}</td><td class="n">${fixed(s.stdReward)}</td>` +
    `<td class="n">${pct(s.positiveShare)}</td><td class="n">${fixed(s.klToReference)}</td></tr>`;
  const pairs = h.before.examples
    .map((b, i) => {
      const a = h.after.examples[i];
      return (
        `<tr><td class="text">${escapeHtml(b.prompt)}</td><td class="text">${escapeHtml(b.completion)}</td>` +
        `<td class="n">${fixed(b.reward)}</td><td class="text">${escapeHtml(a?.completion ?? "")}</td>` +
        `<td class="n">${a ? fixed(a.reward) : "–"}</td></tr>`
      );
    })
    .join("\n");
  return (
    `<p>${h.prompts.length} held-out prompts × ${h.samplesPerPrompt} samples, the same seed for both models. ` +
    `Before: <code>${escapeHtml(h.startModel)}</code>${h.startStep > 0 ? ` (step ${h.startStep})` : ""}; ` +
    `after: <code>${escapeHtml(h.finalModel)}</code>.</p>` +
    `<table id="held-out-summary"><thead><tr><th></th><th>mean reward</th><th>std</th><th>positive</th><th>KL (nats)</th></tr></thead>` +
    `<tbody>${side("before", h.before)}${side("after", h.after)}</tbody></table>` +
    `<table id="held-out-samples"><thead><tr><th>prompt</th><th>before</th><th>reward</th><th>after</th><th>reward</th></tr></thead>` +
    `<tbody>\n${pairs}\n</tbody></table>`
  );
}

function provenanceSection(data: RunReportData, uplotVersion: string): string {
  const p = data.provenance;
  const rows: [string, string][] = p
    ? [
        ["rlaif", p.rlaif],
        ["model", `${p.model.path} (sha256 ${p.model.sha256})`],
        ...(p.resumedFrom
          ? [["resumed from", `${p.resumedFrom.path} at step ${p.resumedFrom.step}`] as [string, string]]
          : []),
        ["backend", p.backend],
        ["bus", p.bus],
        ["mode", p.mode],
        [
          "feedback",
          `${p.feedback.inProcess ? "built-in rule scorer (in process)" : p.feedback.address || "known to the Rollout workers"}`,
        ],
        ["scorers", p.feedback.scorers.map((s) => `${s.id} ${s.version}`).join(", ") || "none yet"],
      ]
    : [["provenance", "not recorded in config.json"]];
  rows.push(["report", `uPlot ${uplotVersion}, made ${data.generatedAt}`]);
  const table = rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("");
  return (
    `<table id="provenance"><tbody>${table}</tbody></table>` +
    `<h3>Settings</h3><pre id="settings">${escapeHtml(JSON.stringify(data.settings, null, 2))}</pre>` +
    `<h3>Training prompts (${data.prompts.length})</h3>` +
    `<ol id="prompts">${data.prompts.map((x) => `<li>${escapeHtml(x)}</li>`).join("")}</ol>`
  );
}

const STYLE = `body{font:14px system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{margin-top:2em;border-bottom:1px solid #ccc}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}
.chart h3{margin:.3em 0;font-size:1em}table{border-collapse:collapse;width:100%;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:12px}
tr.pick-best td:nth-child(2){color:#080;font-weight:bold}tr.pick-worst td:nth-child(2){color:#b00;font-weight:bold}.none{color:#777}pre{background:#f6f6f6;padding:.6em;overflow:auto}`;

/** The client script: draws every chart of #report-data with uPlot and marks what it drew. */
const CLIENT = `(function(){var d=JSON.parse(document.getElementById("report-data").textContent);
var colors=["#1f77b4","#ff7f0e","#2ca02c"];d.charts.forEach(function(c){var el=document.getElementById("chart-"+c.id);
if(!c.steps.length){el.querySelector(".plot").textContent="no data yet";el.setAttribute("data-rendered-points","0");return;}
var series=[{label:"step"}];c.series.forEach(function(s,i){series.push({label:s.label,stroke:c.band&&i>0?"rgba(31,119,180,0.4)":colors[i%3],width:c.band&&i>0?1:2,points:{show:c.steps.length<60}});});
var opts={width:Math.max(320,el.clientWidth-10),height:220,series:series,scales:{x:{time:false}},axes:[{label:"step",incrs:[1,2,5,10,20,50,100,200,500,1000,2000,5000]},{size:70,values:function(u,vs){return vs.map(function(v){return String(+v.toPrecision(3));});}}]};
if(c.band)opts.bands=[{series:[3,2],fill:"rgba(31,119,180,0.15)"}];
var u=new uPlot(opts,[c.steps].concat(c.series.map(function(s){return s.values;})),el.querySelector(".plot"));
el.setAttribute("data-rendered-points",String(u.data[0].length));el.setAttribute("data-rendered-series",String(u.series.length-1));});
document.body.setAttribute("data-charts-ready","true");})();`;

/** The whole page of a run. */
export function renderReportHtml(data: RunReportData, opts: ReportHtmlOptions = {}): string {
  const u = uplot();
  const charts = reportCharts(data);
  const refresh = opts.refreshSeconds
    ? `<meta http-equiv="refresh" content="${Math.round(opts.refreshSeconds)}">`
    : "";
  const last = data.metrics.at(-1);
  const state = data.ended ? "ended" : "running or stopped early";
  const chartDivs = charts
    .map(
      (c) =>
        `<div class="chart" id="chart-${c.id}" data-chart="${c.id}" data-points="${c.steps.length}">` +
        `<h3>${escapeHtml(c.title)}</h3><div class="plot"></div></div>`,
    )
    .join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">${refresh}
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>rlaif run ${escapeHtml(data.runId)}</title>
<style>${u.css}</style><style>${STYLE}</style></head>
<body data-run-id="${escapeHtml(data.runId)}">
<h1>rlaif run <code>${escapeHtml(data.runId)}</code></h1>
<p id="overview">${data.metrics.length} steps recorded (${state})${
    last
      ? `; last step ${escapeHtml(last.step)}: reward ${fixed(Number(last.meanReward))}, KL ${fixed(Number(last.kl))} nats, ${escapeHtml(last.trajectories)} trajectories`
      : ""
  }. Directory: <code>${escapeHtml(data.dir)}</code></p>
<h2>Curves per step</h2>
<div class="charts">
${chartDivs}
</div>
<h2>Samples</h2>
${samplesSection(data)}
<h2>Held-out prompts, before and after</h2>
${heldOutSection(data.heldOut)}
<h2>Config and provenance</h2>
${provenanceSection(data, u.version)}
<script>${u.js}</script>
<script type="application/json" id="report-data">${scriptJson({ charts })}</script>
<script>${CLIENT}</script>
</body></html>
`;
}
