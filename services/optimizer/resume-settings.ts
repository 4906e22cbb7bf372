/**
 * Which settings a resumed run takes from its checkpoint and which the caller may change. Shared
 * by `rlaif train --resume` (settings named by flag) and StartRun with `resume_from` (named by
 * API field), so both refuse the same things with the same reasons.
 */
import type { RunSettings } from "../core/src/config/settings.js";
import { ValidationError } from "../core/src/errors.js";
import type { ModelConfig, ModelKind } from "../core/src/model/causal-lm.js";

/**
 * Settings a resumed run may change: how long it runs and how often it checkpoints. Every other
 * setting shapes the updates (or, like the seed and prompts, the samples), so changing it would
 * not continue the run but start a different one. Raising `steps` with a cosine schedule
 * stretches the schedule from the resumed step on.
 */
export const RESUME_MUTABLE: readonly (keyof RunSettings)[] = ["steps", "checkpointEvery", "checkpointKeep"];

function same(a: unknown, b: unknown): boolean {
  if (typeof a === "number" && typeof b === "number") {
    // The API carries learning rates etc. as float32: 3e-4 arrives as 3.0000001e-4.
    return a === b || (!Number.isInteger(a) && Math.fround(a) === Math.fround(b));
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

function show(v: unknown): string {
  if (typeof v === "number" && !Number.isInteger(v) && Math.fround(v) === v) {
    // A float32 from the API: its shortest decimal (3.0000001e-4 reads 0.0003).
    for (let p = 1; p <= 9; p++)
      if (Math.fround(Number(v.toPrecision(p))) === v) return String(Number(v.toPrecision(p)));
  }
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * The settings of a run resumed at `step` from `saved`: `requested` holds what the caller set
 * (absent keys keep the saved value). A changed setting outside {@link RESUME_MUTABLE}, or a total
 * of steps not above `step`, is a ValidationError whose field is `name(key)` (a flag or API path).
 */
export function resumeSettings(
  saved: RunSettings,
  requested: Partial<RunSettings>,
  step: number,
  name: (key: keyof RunSettings) => string,
): RunSettings {
  const out: RunSettings = { ...saved };
  for (const key of Object.keys(requested) as (keyof RunSettings)[]) {
    const value = requested[key];
    if (value === undefined) continue;
    if (RESUME_MUTABLE.includes(key)) {
      (out as unknown as Record<string, unknown>)[key] = value;
    } else if (!same(value, saved[key])) {
      throw new ValidationError(
        name(key),
        `the run was started with ${show(saved[key])}, got ${show(value)}; a resumed run keeps its settings ` +
          `(only ${RESUME_MUTABLE.join(", ")} may change): leave it unset, or start a new run`,
      );
    }
  }
  if (out.steps <= step) {
    throw new ValidationError(
      name("steps"),
      `the checkpoint is at step ${step} of ${out.steps}: set a larger total to train further`,
    );
  }
  return out;
}

/** Refuses to resume a run whose model is not the one the caller expects (kind and config). */
export function checkSameModel(
  field: string,
  run: { kind: ModelKind; config: ModelConfig },
  expected: { kind: ModelKind; config: ModelConfig },
  expectedFrom: string,
): void {
  const describe = (m: { kind: ModelKind; config: ModelConfig }) =>
    `${m.kind} ${JSON.stringify(m.config, Object.keys(m.config).sort())}`;
  if (describe(run) !== describe(expected)) {
    throw new ValidationError(
      field,
      `the run trains a ${describe(run)} but ${expectedFrom} is a ${describe(expected)}: resume with the run's own model`,
    );
  }
}
