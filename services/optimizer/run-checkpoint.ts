/**
 * Resumable run checkpoints: one safetensors file, `step-<n>.safetensors` in the run directory,
 * that holds everything a run needs to continue bit for bit:
 *
 * - tensors: the policy's parameters (as in any weights file, so `rlaif sample`, the Policy and
 *   Python load it as is), Adam's moments `optimizer.m.<param>` / `optimizer.v.<param>`, the run's
 *   frozen reference weights `reference.<param>`, and — only when the replicas serve older weights
 *   than the learner holds (publishEvery > 1) — the served weights `published.<param>`; a LoRA
 *   run's parameters are its frozen base, its adapters are `lora.<layer>.lora_A|B.weight` and the
 *   served adapters (an adapter-only blob) `published.<layer>.lora_A|B.weight`;
 * - metadata: `runId`, `step`, `weightsVersion`, `runConfig` (the settings with the resolved
 *   prompts), `rngState`, `runProgress` (totals for the summary), `trajectoryLedger` (the ids
 *   applied since the previous checkpoint and the steps in flight, trajectory-ledger.ts), and from the learner
 *   `learnerState` (baseline, β) and `optimizer` (Adam's update count and hyperparameters).
 *
 * Every tensor prefix and metadata key is defined in core/src/model/checkpoint-names.ts.
 *
 * Why one file: a single atomic rename (saveCheckpoint: temp file, fsync, rename, fsync dir)
 * commits weights and state together, so a kill mid-write leaves the previous checkpoint and never
 * a weights file whose optimiser state is from another step. Why the reference weights travel
 * along: the KL penalty is measured against them, and they must survive a crash of the bus.
 */
import { readdir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { defaultConfig, type RunSettings } from "../core/src/config/settings.js";
import { CheckpointError } from "../core/src/errors.js";
import { sha256Hex } from "../core/src/hash.js";
import type { ModelConfig, ModelKind, WeightMap } from "../core/src/model/causal-lm.js";
import { decodeCheckpoint, encodeCheckpoint, loadCheckpoint } from "../core/src/model/checkpoint.js";
import {
  LORA_TENSOR_PREFIX,
  OPTIMIZER_STATE_KEY,
  PUBLISHED_TENSOR_PREFIX,
  prefixTensors,
  REFERENCE_TENSOR_PREFIX,
  RNG_STATE_KEY,
  RUN_CONFIG_KEY,
  RUN_ID_KEY,
  RUN_PROGRESS_KEY,
  STEP_KEY,
  TRAJECTORY_LEDGER_KEY,
  unprefixTensors,
  WEIGHTS_VERSION_KEY,
} from "../core/src/model/checkpoint-names.js";
import { loraSpecOf } from "../core/src/model/lora.js";
import { decodeAdapterBlob, encodeAdapterTensors, isAdapterBlob } from "../core/src/model/lora-files.js";
import type { Learner, ResumePoint, RunDriver } from "./run-driver.js";
import { RNG_SCHEME } from "./run-helpers.js";
import { decodeLedger, encodeLedger } from "./trajectory-ledger.js";

const STEP_FILE = /^step-(\d+)\.safetensors$/;

/** `step-000042.safetensors`: zero-padded so a directory listing sorts by step. */
export function checkpointFileName(step: number): string {
  return `step-${String(step).padStart(6, "0")}.safetensors`;
}

/** What a written checkpoint is. */
export interface WrittenCheckpoint {
  path: string;
  step: number;
  weightsVersion: number;
  sha256: string;
}

/**
 * Write the run's resumable checkpoint of its current step into `dir`. Call it between steps
 * (`driver.atStepBoundary`, or from `onStepEnd`) so every part belongs to the same step.
 */
export async function writeRunCheckpoint(
  dir: string,
  run: { runId: string; settings: RunSettings; learner: Learner; driver: RunDriver },
): Promise<WrittenCheckpoint> {
  const { driver, learner, settings } = run;
  const step = driver.step;
  const reference = driver.referenceBlob ?? (await learner.weightsBlob());
  const tensors = prefixTensors(REFERENCE_TENSOR_PREFIX, decodeCheckpoint(reference).weights);
  const servedStep = driver.servedBlob ? driver.servedStep : step;
  if (servedStep !== step && driver.servedBlob) {
    const served = isAdapterBlob(driver.servedBlob)
      ? decodeAdapterBlob(driver.servedBlob).weights
      : decodeCheckpoint(driver.servedBlob).weights;
    for (const [k, w] of prefixTensors(PUBLISHED_TENSOR_PREFIX, served)) tensors.set(k, w);
  }
  const path = join(dir, checkpointFileName(step));
  const sha256 = await learner.saveCheckpoint(
    path,
    {
      [RUN_ID_KEY]: run.runId,
      [STEP_KEY]: String(step),
      [WEIGHTS_VERSION_KEY]: String(driver.weightsVersion),
      [RUN_CONFIG_KEY]: JSON.stringify(settings),
      [RNG_STATE_KEY]: JSON.stringify({ scheme: RNG_SCHEME, seed: settings.seed, nextStep: step + 1 }),
      [RUN_PROGRESS_KEY]: JSON.stringify({
        servedStep,
        trajectories: driver.trajectories,
        tokens: driver.tokens,
        wallSeconds: driver.wallSeconds,
      }),
      [TRAJECTORY_LEDGER_KEY]: encodeLedger(driver.ledger.record(step)),
    },
    { tensors },
  );
  driver.ledger.checkpointed(step);
  return { path, step, weightsVersion: driver.weightsVersion, sha256 };
}

/** A resumable checkpoint, read back. */
export interface RunCheckpoint {
  path: string;
  runId: string;
  step: number;
  /** Weights version the run had published when it was written (informational). */
  weightsVersion: number;
  settings: RunSettings;
  model: { kind: ModelKind; config: ModelConfig };
  /** Where the driver picks up (history is filled in from metrics.jsonl by the controller). */
  resume: Omit<ResumePoint, "history">;
}

function parseJson<T>(path: string, meta: Record<string, string>, key: string): T {
  const raw = meta[key];
  if (raw === undefined) {
    throw new CheckpointError(
      `${path} is not a resumable checkpoint (no '${key}' metadata): resume from a run directory or one of its step-<n>.safetensors files`,
    );
  }
  try {
    return JSON.parse(raw) as T;
  } catch (cause) {
    throw new CheckpointError(`${path}: metadata '${key}' is not valid JSON`, { cause });
  }
}

/** Reads a resumable checkpoint; CheckpointError says why a file cannot be resumed from. */
export async function readRunCheckpoint(path: string): Promise<RunCheckpoint> {
  const c = await loadCheckpoint(path);
  // A setting added after the checkpoint was written takes its default; each new setting's
  // default keeps the old behaviour (maxStaleness 0: the synchronous loop).
  const settings = { ...defaultConfig().run, ...parseJson<RunSettings>(path, c.metadata, RUN_CONFIG_KEY) };
  const rng = parseJson<{ scheme: string }>(path, c.metadata, RNG_STATE_KEY);
  const progress = parseJson<{
    servedStep: number;
    trajectories: number;
    tokens: number;
    wallSeconds: number;
  }>(path, c.metadata, RUN_PROGRESS_KEY);
  if (rng.scheme !== RNG_SCHEME) {
    throw new CheckpointError(`${path}: RNG scheme '${rng.scheme}' is not this version's '${RNG_SCHEME}'`);
  }
  const step = Number(c.metadata[STEP_KEY]);
  const runId = c.metadata[RUN_ID_KEY] ?? "";
  if (!Number.isInteger(step) || step < 0 || !runId) {
    throw new CheckpointError(`${path}: metadata '${STEP_KEY}' or '${RUN_ID_KEY}' missing or invalid`);
  }
  const blob = (weights: WeightMap) =>
    encodeCheckpoint({
      kind: c.kind,
      config: c.config,
      tokenizer: c.tokenizer,
      ...(c.origin ? { origin: c.origin } : {}),
      weights,
      metadata: {},
    });
  const reference = unprefixTensors(REFERENCE_TENSOR_PREFIX, c.state);
  if (reference.size === 0) throw new CheckpointError(`${path}: no ${REFERENCE_TENSOR_PREFIX}* tensors`);
  const published = unprefixTensors(PUBLISHED_TENSOR_PREFIX, c.state);
  let referenceBlob: Uint8Array;
  let servedBlob: Uint8Array;
  try {
    referenceBlob = blob(reference);
    servedBlob = servedOf(c, settings, referenceBlob, published, blob);
  } catch (cause) {
    throw new CheckpointError(`${path}: reference or published weights do not fit the model`, { cause });
  }
  return {
    path,
    runId,
    step,
    weightsVersion: Number(c.metadata[WEIGHTS_VERSION_KEY] ?? 0),
    settings,
    model: { kind: c.kind, config: c.config },
    resume: {
      step,
      referenceBlob,
      servedBlob,
      servedStep: published.size ? progress.servedStep : step,
      trajectories: progress.trajectories,
      tokens: progress.tokens,
      wallSeconds: progress.wallSeconds,
      ledger: decodeLedger(path, c.metadata[TRAJECTORY_LEDGER_KEY], step),
    },
  };
}

/**
 * The blob the replicas served when the checkpoint was written, as the run published it: the
 * saved `published.*` weights or, without them, the learner's own: for a LoRA run past its first
 * update an adapter-only blob (its adapters, bound to the reference by its SHA-256, exactly the
 * bytes the learner publishes), else the full weights.
 */
function servedOf(
  c: Awaited<ReturnType<typeof loadCheckpoint>>,
  settings: RunSettings,
  referenceBlob: Uint8Array,
  published: WeightMap,
  blob: (weights: WeightMap) => Uint8Array,
): Uint8Array {
  const spec = loraSpecOf(settings);
  const adapters = published.size ? published : unprefixTensors(LORA_TENSOR_PREFIX, c.state);
  const updates = Number(JSON.parse(c.metadata[OPTIMIZER_STATE_KEY] ?? "{}").step ?? 0);
  const isAdapters = [...adapters.keys()].some((n) => n.endsWith(".lora_A.weight"));
  if (spec === null || !isAdapters || (!published.size && updates === 0))
    return blob(published.size ? published : c.weights);
  return encodeAdapterTensors({ baseSha256: sha256Hex(referenceBlob), spec, weights: adapters });
}

/** The run directory's `step-<n>.safetensors` files, newest first. */
export async function listRunCheckpoints(dir: string): Promise<{ step: number; path: string }[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names
    .map((name) => ({ m: STEP_FILE.exec(name), name }))
    .filter((x) => x.m !== null)
    .map((x) => ({ step: Number(x.m?.[1]), path: join(dir, x.name) }))
    .sort((a, b) => b.step - a.step);
}

/**
 * The checkpoint to resume from: `from` itself when it is a file, else the newest step file of
 * the run directory `from` that reads back whole (a damaged one is reported through `log` and
 * the next older one used). CheckpointError when there is none.
 */
export async function openResumeCheckpoint(
  from: string,
  log?: (line: string) => void,
): Promise<RunCheckpoint> {
  const info = await stat(from).catch(() => null);
  if (!info) throw new CheckpointError(`${from} does not exist`);
  if (info.isFile()) return readRunCheckpoint(from);
  const files = await listRunCheckpoints(from);
  if (files.length === 0) {
    throw new CheckpointError(
      `${from} holds no step-<n>.safetensors checkpoint (runs write one every checkpointEvery steps and after the last)`,
    );
  }
  let first: unknown;
  for (const f of files) {
    try {
      return await readRunCheckpoint(f.path);
    } catch (err) {
      first ??= err;
      log?.(`optimizer: skipping ${f.path}: ${(err as Error).message}`);
    }
  }
  throw first;
}

/**
 * Keep the newest `keep` step checkpoints of `dir` (0 = all) and delete the rest, those past
 * `after` (if given), and temp files a killed write left behind. Only the run's own writer uses
 * its directory, holding the step lock while it writes, so no temp file here is still in use.
 */
export async function pruneRunCheckpoints(dir: string, keep: number, after = Infinity): Promise<void> {
  const files = await listRunCheckpoints(dir);
  const old = [...files.filter((f) => f.step > after), ...(keep > 0 ? files.slice(keep) : [])].map(
    (f) => f.path,
  );
  const names = await readdir(dir).catch(() => [] as string[]);
  const temps = names.filter((n) => /^\.step-\d+\.safetensors\.tmp-/.test(n)).map((n) => join(dir, n));
  for (const p of [...old, ...temps]) await unlink(p).catch(() => undefined);
}
