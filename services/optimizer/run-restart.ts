/**
 * The run record a run starts with, read back to start it over: its config.json (written before
 * its first step: run id, settings with the resolved prompts, seed, and the provenance with the
 * SHA-256 of the checkpoint its weights start from). Why: a run whose Optimizer died before its
 * first step checkpoint has no resumable state, but nothing it did was kept either, so the same
 * settings from the same weights redo it exactly (auto-resume.ts restartFromStart).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { defaultConfig, type RunSettings } from "../core/src/config/settings.js";
import { CheckpointError } from "../core/src/errors.js";
import { CONFIG_FILE, type RunProvenance } from "./run-files.js";
import { fileRef } from "./run-provenance.js";

/** What starting a run over from step 0 needs. */
export interface StartRecord {
  runId: string;
  /** The run directory (it keeps it). */
  dir: string;
  /** The settings it started with, prompts resolved. */
  settings: RunSettings;
  /** The checkpoint its weights started from: path and SHA-256. */
  model: { path: string; sha256: string };
}

/**
 * The start record of the run in `dir`, from its config.json. A setting the file lacks (added
 * after the run started) takes its default, which keeps the old behaviour. CheckpointError when
 * the file is missing, unreadable, or records no run id or no starting checkpoint's SHA-256.
 */
export function readStartRecord(dir: string): StartRecord {
  const file = join(dir, CONFIG_FILE);
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (cause) {
    throw new CheckpointError(`${file} cannot be read as JSON: ${(cause as Error).message}`, { cause });
  }
  const runId = doc.runId;
  const model = (doc.provenance as RunProvenance | undefined)?.model;
  if (typeof runId !== "string" || !runId) throw new CheckpointError(`${file} records no runId`);
  if (typeof model?.sha256 !== "string" || typeof model.path !== "string") {
    throw new CheckpointError(
      `${file} records no starting checkpoint (provenance.model), so it cannot be checked that a restart starts from the same weights`,
    );
  }
  const defaults = defaultConfig().run;
  const settings = { ...defaults } as Record<string, unknown>;
  for (const key of Object.keys(defaults)) if (key in doc) settings[key] = doc[key];
  return {
    runId,
    dir,
    settings: settings as unknown as RunSettings,
    model: { path: model.path, sha256: model.sha256 },
  };
}

/**
 * Resolves when `checkpoint` (the Optimizer's starting checkpoint) is the one the run started
 * from, byte for byte; CheckpointError naming both hashes when it changed.
 */
export async function unchangedStart(record: StartRecord, checkpoint: string): Promise<void> {
  const now = await fileRef(checkpoint);
  if (now.sha256 !== record.model.sha256) {
    throw new CheckpointError(
      `run ${record.runId} started from ${record.model.path} with SHA-256 ${record.model.sha256}, but this Optimizer's checkpoint ${now.path} has SHA-256 ${now.sha256}: the starting weights changed, so starting it over would not redo the same run`,
    );
  }
}
