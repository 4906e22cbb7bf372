/**
 * The run report (docs/run-report.md): everything a run directory records, read into one value
 * and written as one self-contained HTML page (report-html.ts). Why here: the Optimizer serves
 * the same page live for a running run (report-live.ts), and `rlaif train` / `rlaif report`
 * write it for an ended one, so both read a run directory the same way. Only files are read:
 * a run directory copied off the machine that ran it makes the same report.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";
import { StepMetricsSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { ConfigError } from "../core/src/errors.js";
import { plainJson } from "../core/src/plain-json.js";
import { renderReportHtml } from "./report-html.js";
import {
  CONFIG_FILE,
  FINAL_CHECKPOINT,
  HELD_OUT_FILE,
  METRICS_FILE,
  type RunProvenance,
  readMetrics,
  writeFileAtomic,
} from "./run-files.js";
import { readSamples, type StepSamples } from "./step-samples.js";

/** File name of the report inside the run's directory. */
export const REPORT_FILE = "report.html";

/** One held-out sample as the report shows it. */
export interface HeldOutSampleView {
  prompt: string;
  completion: string;
  reward: number;
}

/** One side (before or after) of the held-out evaluation, as far as the report reads it. */
export interface HeldOutSideView {
  meanReward: number;
  stdReward: number;
  positiveShare: number;
  klToReference: number;
  examples: HeldOutSampleView[];
}

/**
 * What the report reads of `held-out.json`: the fields it shows. The CLI writes the full
 * HeldOutReport; this reader only needs its shape, so the Optimizer does not import the CLI.
 */
export interface HeldOutView {
  prompts: string[];
  samplesPerPrompt: number;
  startModel: string;
  finalModel: string;
  startStep: number;
  before: HeldOutSideView;
  after: HeldOutSideView;
}

/** Everything the report shows. */
export interface RunReportData {
  runId: string;
  /** The run directory as given. */
  dir: string;
  /** config.json without its prompts and provenance (shown apart); {} when missing. */
  settings: Record<string, unknown>;
  prompts: string[];
  provenance: RunProvenance | null;
  /** Steps recorded in metrics.jsonl, as plain JSON (plain-json.ts). */
  metrics: Record<string, unknown>[];
  samples: StepSamples[];
  heldOut: HeldOutView | null;
  /** Whether the run has ended (final.safetensors exists), or is still running / was cut short. */
  ended: boolean;
  /** ISO time the report was made. */
  generatedAt: string;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError(
      `${file} is not valid JSON (${(err as Error).message}): the run directory is damaged`,
    );
  }
}

/** A held-out.json that has every field the report shows, or null. */
function heldOutView(v: unknown): HeldOutView | null {
  const h = v as Partial<HeldOutView> | null;
  const side = (s: Partial<HeldOutSideView> | undefined) =>
    !!s && typeof s.meanReward === "number" && Array.isArray(s.examples);
  return h && Array.isArray(h.prompts) && side(h.before) && side(h.after) ? (h as HeldOutView) : null;
}

/**
 * Read a run directory (`<out>/<runId>/`). A directory without config.json and metrics.jsonl is
 * refused with a message naming what to pass; every other file is optional (a run that has just
 * started has no step yet, an old run no samples.jsonl, a run of `rlaif run` no held-out.json).
 */
export function loadRunReport(dir: string, now: Date = new Date()): RunReportData {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new ConfigError(`${dir} is not a directory: pass a run directory (<out>/<run id>/)`);
  const configFile = join(dir, CONFIG_FILE);
  if (!existsSync(configFile) && !existsSync(join(dir, METRICS_FILE)))
    throw new ConfigError(
      `${dir} holds neither ${CONFIG_FILE} nor ${METRICS_FILE}: pass a run directory (<out>/<run id>/)`,
    );
  const config = (existsSync(configFile) ? readJson(configFile) : {}) as Record<string, unknown>;
  const { runId, prompts, provenance, ...settings } = config;
  const metrics = readMetrics(dir).map(
    (m: StepMetrics) => plainJson(StepMetricsSchema, m) as Record<string, unknown>,
  );
  const heldFile = join(dir, HELD_OUT_FILE);
  return {
    runId: typeof runId === "string" ? runId : String(metrics[0]?.runId ?? ""),
    dir,
    settings,
    prompts: Array.isArray(prompts) ? prompts.map(String) : [],
    provenance: (provenance as RunProvenance | undefined) ?? null,
    metrics,
    samples: readSamples(dir),
    heldOut: existsSync(heldFile) ? heldOutView(readJson(heldFile)) : null,
    ended: existsSync(join(dir, FINAL_CHECKPOINT)),
    generatedAt: now.toISOString(),
  };
}

/**
 * Write the report of the run in `dir` to `out` (default `<dir>/report.html`) atomically;
 * returns the path and its size in bytes.
 */
export function writeRunReport(dir: string, out = join(dir, REPORT_FILE)): { path: string; bytes: number } {
  const html = renderReportHtml(loadRunReport(dir));
  writeFileAtomic(out, html);
  return { path: out, bytes: Buffer.byteLength(html) };
}
