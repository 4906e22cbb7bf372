/**
 * Runs that ended, as their directories record them: `ended.json` beside config.json and
 * metrics.jsonl says how the run ended (state, step, error) and, for a run that succeeded, its
 * summary. Why on disk: an Optimizer restarted on the same output directory must still answer
 * GetStatus, ListRuns and WatchMetrics for the runs that ended before it started (or while it
 * was down), instead of NOT_FOUND for a run whose files are right there.
 */
import { readFileSync, statSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { type RunSummary, RunSummarySchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { plainJson } from "../core/src/plain-json.js";
import { CONFIG_FILE, METRICS_FILE, writeFileAtomic } from "./run-files.js";

/** The file that says a run has ended and is not to be resumed by a restart. */
export const RUN_END_FILE = "ended.json";

/** How a run ended, as {@link markRunEnded} records it. */
export interface RunEnd {
  /** RunState's name: SUCCEEDED, CANCELLED or FAILED. */
  state: string;
  /** Steps it had completed. */
  step: number;
  error: string;
  /** Steps it was to take (its settings' `steps`), for ListRuns. */
  steps?: number;
  /** When it was started (or last resumed), ms since the Unix epoch. */
  startedUnixMs?: number;
  /** Its summary, when it succeeded. */
  summary?: RunSummary | null;
}

/**
 * Record in `dir` that its run ended. Never throws: a run's outcome must not turn into a failure
 * for want of this file (`log` says it could not be written).
 */
export function markRunEnded(dir: string, end: RunEnd, log?: (line: string) => void): void {
  const { summary, ...rest } = end;
  const doc = {
    ...rest,
    ...(summary ? { summary: plainJson(RunSummarySchema, summary) } : {}),
    endedUnixMs: Date.now(),
  };
  try {
    writeFileAtomic(join(dir, RUN_END_FILE), `${JSON.stringify(doc)}\n`);
  } catch (err) {
    log?.(`optimizer: cannot write ${join(dir, RUN_END_FILE)}: ${(err as Error).message}`);
  }
}

/** A run that ended before this Optimizer started, read back from its directory. */
export interface EndedRun {
  runId: string;
  dir: string;
  state: RunState;
  step: number;
  /** Steps it was to take (0 when its files do not say). */
  steps: number;
  error: string;
  /** When it was started; an ended.json of an older version lacks it, and its end time stands in. */
  startedUnixMs: number;
  endedUnixMs: number;
  /** Its summary; null when it did not succeed, or its ended.json predates summaries. */
  summary: RunSummary | null;
}

function mtimeMs(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

const ENDED_STATES = new Set([RunState.SUCCEEDED, RunState.CANCELLED, RunState.FAILED]);

/**
 * The ended run of `dir`, or null when it has not ended: no ended.json, or one older than its
 * metrics.jsonl (a finished run continued with more steps is unfinished again). Throws when the
 * files are there but cannot be read (the caller logs and skips the directory).
 */
export function readEndedRun(dir: string): EndedRun | null {
  const endAt = mtimeMs(join(dir, RUN_END_FILE));
  if (endAt === 0 || endAt < mtimeMs(join(dir, METRICS_FILE))) return null;
  const config = JSON.parse(readFileSync(join(dir, CONFIG_FILE), "utf8")) as {
    runId?: unknown;
    steps?: unknown;
  };
  const end = JSON.parse(readFileSync(join(dir, RUN_END_FILE), "utf8")) as Record<string, unknown>;
  const state = RunState[String(end.state) as keyof typeof RunState];
  if (typeof config.runId !== "string" || !config.runId) throw new Error(`${CONFIG_FILE} names no runId`);
  if (state === undefined || !ENDED_STATES.has(state)) {
    throw new Error(`${RUN_END_FILE}: state "${String(end.state)}" is not an end state`);
  }
  const num = (v: unknown, fallback: number) => (typeof v === "number" && Number.isFinite(v) ? v : fallback);
  const endedUnixMs = num(end.endedUnixMs, endAt);
  return {
    runId: config.runId,
    dir,
    state,
    step: num(end.step, 0),
    steps: num(end.steps, num(config.steps, 0)),
    error: typeof end.error === "string" ? end.error : "",
    startedUnixMs: num(end.startedUnixMs, endedUnixMs),
    endedUnixMs,
    summary: end.summary ? fromJson(RunSummarySchema, end.summary as JsonValue) : null,
  };
}

/**
 * Every ended run under `outDir` ({@link readEndedRun}); a directory whose files cannot be read
 * is skipped, the reason in `log`.
 */
export async function loadEndedRuns(outDir: string, log?: (line: string) => void): Promise<EndedRun[]> {
  const entries = await readdir(outDir, { withFileTypes: true }).catch(() => []);
  const runs: EndedRun[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const dir = join(outDir, e.name);
    try {
      const run = readEndedRun(dir);
      if (run) runs.push(run);
    } catch (err) {
      log?.(`optimizer: not listing the ended run in ${dir}: ${(err as Error).message}`);
    }
  }
  return runs;
}
