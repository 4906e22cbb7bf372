/**
 * Runs train-child.ts in a fresh process (its CPU and memory are then the run's alone, and the
 * first step pays for start-up as a user's does) and returns what it measured.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

/** What the embedded run measured (see train-child.ts). */
export interface TrainResult {
  steps: number;
  /** The rate and CPU figures are over steps firstMeasuredStep .. firstMeasuredStep + measuredSteps − 1. */
  firstMeasuredStep: number;
  measuredSteps: number;
  firstStepSeconds: number;
  stepsPerSecond: number;
  /** CPU seconds of the process tree per wall second over the measured steps (2 = both cores busy). */
  cpuPerWall: number;
  /** The same for the main process alone (process.cpuUsage, worker threads included). */
  processCpuPerWall: number;
  processes: number;
  rssMbAfterStep: number[];
  peakRssMb: number;
}

/** Settings of the run beyond the defaults (`rlaif train` flags without the dashes). */
export type TrainFlags = Record<string, number | string>;

const CHILD = join(import.meta.dirname, "train-child.ts");

/** `steps` steps of the embedded run with the default settings overridden by `flags`. */
export async function benchTrain(steps: number, flags: TrainFlags = {}): Promise<TrainResult> {
  const out = mkdtempSync(join(tmpdir(), "rlaif-speed-train-"));
  const args = Object.entries({ steps, ...flags }).flatMap(([k, v]) => [`--${k}`, String(v)]);
  try {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", CHILD, ...args, "--out", out],
      { maxBuffer: 16 * 2 ** 20, timeout: 1_800_000 },
    );
    return JSON.parse(stdout.trim().split("\n").at(-1) as string) as TrainResult;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
