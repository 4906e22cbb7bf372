/**
 * `--resume-unfinished`: an Optimizer that starts and finds, under its output directory, the
 * run it was training when its process died, resumes that run by itself from its newest step
 * checkpoint (the resume of `StartRun.resume_from`: planResume, RunController.resume), before
 * it serves, so a client asking for the run after a restart finds it running again.
 *
 * Which run: only the most recently active run directory (newest config.json / metrics.jsonl),
 * and only when it did not end. A run ends — succeeded, cancelled, failed on its own — with an
 * `ended.json` beside its files ({@link markRunEnded}); a run stopped by its process dying, or
 * by the Optimizer shutting down (SIGTERM), has none newer than its last step. Older unfinished runs are never picked:
 * they were given up on, and a restart must continue what was going on, not something else.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { RUN_END_FILE } from "./ended-runs.js";
import { planResume } from "./run-api.js";
import { listRunCheckpoints } from "./run-checkpoint.js";
import type { RunController, RunRecord } from "./run-controller.js";
import { CONFIG_FILE, FINAL_CHECKPOINT, METRICS_FILE } from "./run-files.js";
import { readStartRecord, unchangedStart } from "./run-restart.js";

/** Where a run's end is recorded (ended-runs.ts); re-exported for the callers of this module. */
export { markRunEnded, RUN_END_FILE } from "./ended-runs.js";

async function mtimeMs(path: string): Promise<number> {
  return (await stat(path).catch(() => null))?.mtimeMs ?? 0;
}

/** The run directory under `outDir` that was active last (by its config.json / metrics.jsonl), or null. */
async function newestRunDir(outDir: string): Promise<string | null> {
  const entries = await readdir(outDir, { withFileTypes: true }).catch(() => []);
  let best: { dir: string; at: number } | null = null;
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const dir = join(outDir, e.name);
    const config = await mtimeMs(join(dir, CONFIG_FILE));
    if (config === 0) continue;
    const at = Math.max(config, await mtimeMs(join(dir, METRICS_FILE)));
    if (!best || at > best.at) best = { dir, at };
  }
  return best?.dir ?? null;
}

/**
 * The directory of the run to resume: the newest run under `outDir` when it has not ended;
 * null otherwise, with the reason in `log`. Ended means an ended.json or final.safetensors at
 * least as new as its metrics.jsonl: a finished run continued with `--resume` to more steps
 * appends metrics after them, and is unfinished again until it ends again.
 */
export async function findUnfinishedRun(
  outDir: string,
  log?: (line: string) => void,
): Promise<string | null> {
  const dir = await newestRunDir(outDir);
  if (!dir) {
    log?.(`optimizer: --resume-unfinished: no run under ${outDir}`);
    return null;
  }
  const stepped = await mtimeMs(join(dir, METRICS_FILE));
  for (const name of [RUN_END_FILE, FINAL_CHECKPOINT]) {
    const at = await mtimeMs(join(dir, name));
    if (at > 0 && at >= stepped) {
      log?.(`optimizer: --resume-unfinished: the newest run ${dir} has ended (${name}); nothing to resume`);
      return null;
    }
  }
  return dir;
}

/** What {@link resumeUnfinishedRun} needs. */
export interface AutoResumeOptions {
  outDir: string;
  /** This Optimizer's starting checkpoint: the run must train the same model. */
  checkpoint: string;
  log?: (line: string) => void;
}

/**
 * Resume the unfinished run of `outDir` on `runs`, if there is one; resolves with its record,
 * or null (the reason logged) when there is none or it cannot be resumed — a damaged
 * checkpoint, another model. A run that died before its first step checkpoint is started over
 * from step 0 under its id, settings and seed ({@link restartFromStart}). The Optimizer serves
 * either way.
 */
export async function resumeUnfinishedRun(
  runs: RunController,
  opts: AutoResumeOptions,
): Promise<RunRecord | null> {
  const dir = await findUnfinishedRun(opts.outDir, opts.log);
  if (!dir) return null;
  try {
    if ((await listRunCheckpoints(dir)).length === 0) return await restartFromStart(runs, dir, opts);
    const plan = await planResume(
      dir,
      {},
      {
        name: (key) => `run.${key}`,
        sameModelAs: { field: "--checkpoint", path: opts.checkpoint },
        ...(opts.log ? { log: opts.log } : {}),
      },
    );
    opts.log?.(
      `optimizer: --resume-unfinished: run ${plan.runId} did not finish; resuming it at step ${plan.step}`,
    );
    return await runs.resume(plan.checkpoint, plan.settings);
  } catch (err) {
    opts.log?.(
      `optimizer: --resume-unfinished: the unfinished run ${dir} is not resumed: ${(err as Error).message}`,
    );
    return null;
  }
}

/**
 * The run of `dir` died before its first step checkpoint: nothing it did was kept (its updates
 * lived only in the dead process), so starting it again from step 0 with the settings, prompts
 * and seed its config.json records gives the run an uninterrupted one gives. Only from the same
 * starting weights: the SHA-256 recorded when it started must be that of this Optimizer's
 * checkpoint, else it is refused (thrown, and logged by the caller).
 */
async function restartFromStart(
  runs: RunController,
  dir: string,
  opts: AutoResumeOptions,
): Promise<RunRecord> {
  const record = readStartRecord(dir);
  await unchangedStart(record, opts.checkpoint);
  opts.log?.(
    `optimizer: --resume-unfinished: run ${record.runId} did not finish and wrote no step checkpoint; restarting it from step 0 (seed ${record.settings.seed})`,
  );
  return runs.restart(record);
}
