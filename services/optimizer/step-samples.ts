/**
 * `samples.jsonl`: a bounded sample table per step, one JSON line per step with the step's best
 * and worst trajectory by reward and a few others, plus the step's completion lengths. Why: a
 * run's metrics say how reward moved, not what the policy wrote; people judge a run by reading
 * its samples (docs/run-report.md). A step's line stays small whatever the batch size, so the
 * file grows by at most {@link MAX_SAMPLES_PER_STEP} samples a step.
 *
 * It is appended like metrics.jsonl (one line per step, after the step's update) and cut back
 * with it when a run is resumed or restarted (run-files.ts: stepLinesUpTo), so a resumed run
 * keeps exactly one line per step. Trajectories are taken in job order and the "random" picks
 * hash the step and job, so a step re-run from the same seeds writes the same line.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { ValidationError } from "../core/src/errors.js";
import { readStepLines, stepLinesUpTo } from "./run-files.js";
import { trajectoryKl } from "./run-helpers.js";

/** File name inside `<out>/<runId>/`. */
export const SAMPLES_FILE = "samples.jsonl";
/** Samples kept per step besides the best and the worst. */
export const RANDOM_SAMPLES_PER_STEP = 3;
/** At most this many samples per step line. */
export const MAX_SAMPLES_PER_STEP = 2 + RANDOM_SAMPLES_PER_STEP;
/** Characters of a prompt or completion kept in the file (a longer one is cut, with "…"). */
export const MAX_SAMPLE_CHARS = 2000;

/** Why a sample is in the table. */
export type SamplePick = "best" | "worst" | "random";

/** One sampled trajectory as the table keeps it. */
export interface StoredSample {
  pick: SamplePick;
  /** Trajectory.prompt_index and sample_index: which job of the step produced it. */
  promptIndex: number;
  sampleIndex: number;
  prompt: string;
  completion: string;
  reward: number;
  /** Σ_t (log π_behaviour − log π_ref) over its completion tokens: its own k1 KL, nats. */
  kl: number;
  /** Completion tokens. */
  tokens: number;
}

/** One line of samples.jsonl. */
export interface StepSamples {
  step: number;
  /** Trajectories the step applied (the table holds a few of them). */
  trajectories: number;
  /** Mean and largest completion length over all of them, in tokens. */
  meanCompletionTokens: number;
  maxCompletionTokens: number;
  samples: StoredSample[];
}

const cut = (text: string) => (text.length > MAX_SAMPLE_CHARS ? `${text.slice(0, MAX_SAMPLE_CHARS)}…` : text);

function stored(t: Trajectory, pick: SamplePick): StoredSample {
  return {
    pick,
    promptIndex: t.promptIndex,
    sampleIndex: t.sampleIndex,
    prompt: cut(t.prompt),
    completion: cut(t.completion),
    reward: t.reward,
    kl: trajectoryKl(t),
    tokens: t.completionTokens.length,
  };
}

/**
 * A stable pseudo-random order key of a trajectory: of its step and job, not of its id, which
 * names the bus run id and so differs when a resumed run re-runs the step.
 */
const orderKey = (step: number, t: Trajectory) =>
  createHash("sha256").update(`${step}.${t.promptIndex}.${t.sampleIndex}`).digest("hex");

/**
 * The table line of one step: the best and the worst of `arrived` by reward (the first job on a tie),
 * then up to {@link RANDOM_SAMPLES_PER_STEP} others in a stable pseudo-random order.
 */
export function stepSamples(step: number, arrived: Trajectory[]): StepSamples {
  if (arrived.length === 0) throw new ValidationError("trajectories", `step ${step} applied no trajectory`);
  // In job order, whatever order they arrived in, so ties and the line are the same on a re-run.
  const trajs = [...arrived].sort((a, b) => a.promptIndex - b.promptIndex || a.sampleIndex - b.sampleIndex);
  let best = 0;
  let worst = 0;
  trajs.forEach((t, i) => {
    if (t.reward > (trajs[best]?.reward ?? 0)) best = i;
    if (t.reward < (trajs[worst]?.reward ?? 0)) worst = i;
  });
  const picked: StoredSample[] = [stored(trajs[best] as Trajectory, "best")];
  if (worst !== best) picked.push(stored(trajs[worst] as Trajectory, "worst"));
  const rest = trajs
    .filter((_, i) => i !== best && i !== worst)
    .map((t) => ({ t, key: orderKey(step, t) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .slice(0, RANDOM_SAMPLES_PER_STEP);
  for (const { t } of rest) picked.push(stored(t, "random"));
  const lengths = trajs.map((t) => t.completionTokens.length);
  return {
    step,
    trajectories: trajs.length,
    meanCompletionTokens: lengths.reduce((a, b) => a + b, 0) / lengths.length,
    maxCompletionTokens: Math.max(...lengths),
    samples: picked,
  };
}

/** One line of the file: the record and a newline. */
export function samplesLine(s: StepSamples): string {
  return `${JSON.stringify(s)}\n`;
}

/** A line as a record; throws on anything that is not one (readStepLines then skips it). */
function parseSamples(line: string): StepSamples {
  const v = JSON.parse(line) as Partial<StepSamples>;
  if (typeof v.step !== "number" || !Array.isArray(v.samples))
    throw new ValidationError("samples.jsonl", "a line without step and samples");
  return v as StepSamples;
}

const stepOf = (s: StepSamples) => s.step;

/** The sample table of steps 1..`step` in `<dir>/samples.jsonl`, oldest first ([] without one). */
export function readSamples(dir: string, step = Number.MAX_SAFE_INTEGER): StepSamples[] {
  return readStepLines(join(dir, SAMPLES_FILE), parseSamples, stepOf, step);
}

/** `<dir>/samples.jsonl` cut back to steps 1..`step` (a resumed or restarted run's start). */
export function samplesUpTo(dir: string, step: number): StepSamples[] {
  return stepLinesUpTo(join(dir, SAMPLES_FILE), parseSamples, stepOf, samplesLine, step);
}
