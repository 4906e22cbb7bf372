/**
 * The plain files of a run directory besides checkpoints: `config.json` and `metrics.jsonl`.
 * Rewrites go through a temp file and a rename, so a kill never leaves half a file; appends of
 * one metrics line may be cut by a kill, which {@link metricsUpTo} tolerates.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { fromJsonString } from "@bufbuild/protobuf";
import { type StepMetrics, StepMetricsSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { plainJson } from "../core/src/plain-json.js";

/** File names inside `<out>/<runId>/`. */
export const CONFIG_FILE = "config.json";
export const METRICS_FILE = "metrics.jsonl";
export const FINAL_CHECKPOINT = "final.safetensors";
/** The held-out before/after evaluation `rlaif train` writes (services/cli/held-out-eval.ts). */
export const HELD_OUT_FILE = "held-out.json";

/** Write `text` to `file` atomically: temp file in the same directory, fsync, rename. */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    const fd = openSync(tmp, "w");
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw err;
  }
}

/** One scorer that scored a run's trajectories (ScoreResponse.scorer_id / scorer_version). */
export interface ScorerIdentity {
  id: string;
  version: string;
}

/**
 * Where a run came from, recorded in its `config.json` so that a result can be traced to the
 * exact model, scorer and software that made it, and repeated.
 */
export interface RunProvenance {
  /** Version of rlaif that ran it (package.json). */
  rlaif: string;
  /** Checkpoint the run's weights start from: absolute path and SHA-256 of the file. */
  model: { path: string; sha256: string };
  /** For a resumed run: the resumable checkpoint it continued from, and its step. */
  resumedFrom?: { path: string; sha256: string; step: number };
  /** Compute backend of the Optimizer (wasm, tensorflow, cpu). */
  backend: string;
  /** "embedded" (the in-memory bus of one process) or the NATS URL. */
  bus: string;
  /** "embedded" or "distributed". */
  mode: string;
  /**
   * The feedback side: the FeedbackService address where the Optimizer knows it ("" when the
   * Rollout workers alone know it), whether it is the built-in rule scorer started in the same
   * process (`rlaif train`; its address is then a loopback port of that process), and every
   * scorer (id and version) that scored the run's trajectories so far.
   */
  feedback: { address: string; inProcess: boolean; scorers: ScorerIdentity[] };
}

/**
 * `config.json`: the run id, the effective settings, the prompts it cycles through, and (when
 * known) its provenance.
 */
export function writeRunConfig(
  dir: string,
  runId: string,
  settings: RunSettings,
  prompts: string[],
  provenance?: RunProvenance,
): void {
  const doc = { runId, ...settings, prompts, ...(provenance ? { provenance } : {}) };
  writeFileAtomic(join(dir, CONFIG_FILE), `${JSON.stringify(doc, null, 2)}\n`);
}

/**
 * One metrics line, as `metrics.jsonl` holds it: a plain JSON object with every field, numbers
 * as numbers (core/src/plain-json.ts), so jq and pandas read it without surprises.
 */
export function metricsLine(m: StepMetrics): string {
  return `${JSON.stringify(plainJson(StepMetricsSchema, m))}\n`;
}

/**
 * The records of steps 1..`step` in the JSON-lines file `file`, one per step, oldest first; the
 * file is only read. A torn last line (a kill mid-append), a line `parse` rejects (throws) and
 * repeated steps are skipped; a missing file gives []. Why: metrics.jsonl and samples.jsonl are
 * both appended once per step and read back alike.
 */
export function readStepLines<T>(
  file: string,
  parse: (line: string) => T,
  stepOf: (record: T) => number,
  step = Number.MAX_SAFE_INTEGER,
): T[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  const byStep = new Map<number, T>();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let record: T;
    try {
      record = parse(line);
    } catch {
      continue;
    }
    const n = stepOf(record);
    if (n >= 1 && n <= step && !byStep.has(n)) byStep.set(n, record);
  }
  return [...byStep.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r);
}

/**
 * {@link readStepLines} of steps 1..`step`, and the file rewritten to hold exactly those lines
 * (written back by `toLine`). Why: a run resumed from step k re-runs k + 1.., whose lines the
 * crashed attempt may have written already; dropping them keeps one line per step. A missing
 * file gives [] and is left alone.
 */
export function stepLinesUpTo<T>(
  file: string,
  parse: (line: string) => T,
  stepOf: (record: T) => number,
  toLine: (record: T) => string,
  step: number,
): T[] {
  if (!existsSync(file)) return [];
  const kept = readStepLines(file, parse, stepOf, step);
  writeFileAtomic(file, kept.map(toLine).join(""));
  return kept;
}

const parseMetrics = (line: string) => fromJsonString(StepMetricsSchema, line);
const metricsStep = (m: StepMetrics) => Number(m.step);

/**
 * The metrics of steps 1..`step` in `<dir>/metrics.jsonl` ({@link readStepLines}). Why: an ended
 * run's recorded history, for WatchMetrics after a restart.
 */
export function readMetrics(dir: string, step = Number.MAX_SAFE_INTEGER): StepMetrics[] {
  return readStepLines(join(dir, METRICS_FILE), parseMetrics, metricsStep, step);
}

/**
 * The metrics of steps 1..`step` from `<dir>/metrics.jsonl`, the file cut back to them
 * ({@link stepLinesUpTo}): what a resumed run starts from.
 */
export function metricsUpTo(dir: string, step: number): StepMetrics[] {
  return stepLinesUpTo(join(dir, METRICS_FILE), parseMetrics, metricsStep, metricsLine, step);
}
