/**
 * Reward normalisation survives a crash exactly (docs/architecture.md#reward-normalisation): its
 * running moments are part of the learner state in the run checkpoint, so a run with per-scorer
 * normalisation and clipping on, crashed after step 2 and resumed from its checkpoint, ends bitwise equal
 * to an uninterrupted run, and its metrics report the running μ and σ per scorer.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { RunSettings } from "../services/core/src/config/settings.js";
import { loadCheckpoint } from "../services/core/src/model/checkpoint.js";
import { RULE_SCORER_ID } from "../services/feedback/scorer.js";
import { checkpointFileName } from "../services/optimizer/run-checkpoint.js";
import { differingTensors, resumeToEnd, runAndCrash, runToEnd, tensorBytes } from "./helpers/resume-runs.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const NORMALISED: Partial<RunSettings> = {
  rewardNorm: "per-scorer",
  rewardClip: 1.5,
  baseline: "moving-average",
  seed: 5,
  steps: 3,
  checkpointEvery: 1,
};

describe("reward normalisation resume", () => {
  let start: string;
  beforeAll(async () => {
    start = await writeTinyCheckpoint(6);
  });

  it("reward norm resume - a normalised, clipped run crashed after step 2 and resumed from its checkpoint ends bitwise equal to an uninterrupted run", async () => {
    const fullDir = await runToEnd(tinyRunConfig(start, NORMALISED));
    const crashed = tinyRunConfig(start, NORMALISED);
    const dir = await runAndCrash(crashed, 2);
    const resumed = await resumeToEnd(crashed, dir);
    // Resumed from a checkpoint before the end, so the saved moments were restored and used.
    expect(resumed.dir).toBe(dir);
    expect(resumed.step).toBeGreaterThanOrEqual(1);
    expect(resumed.step).toBeLessThan(3);

    const a = await tensorBytes(join(fullDir, checkpointFileName(3)));
    const b = await tensorBytes(join(dir, checkpointFileName(3)));
    expect(differingTensors(a, b)).toEqual([]);
    const finals = [join(fullDir, "final.safetensors"), join(dir, "final.safetensors")] as const;
    expect(differingTensors(await tensorBytes(finals[0]), await tensorBytes(finals[1]))).toEqual([]);
    const ma = (await loadCheckpoint(join(fullDir, checkpointFileName(3)))).metadata;
    const mb = (await loadCheckpoint(join(dir, checkpointFileName(3)))).metadata;
    expect(mb.learnerState).toBe(ma.learnerState);
    // Every OK reward of the 3 steps × 8 samples counted once, the resumed steps too.
    const state = JSON.parse(mb.learnerState ?? "");
    expect(state.rewardNorm[RULE_SCORER_ID].count).toBe(24);

    const metrics = (d: string) =>
      readFileSync(join(d, "metrics.jsonl"), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
    const lines = metrics(dir);
    expect(lines.map((m) => m.step)).toEqual([1, 2, 3]);
    expect(lines.map((m) => [m.rewardNormMean, m.rewardNormStd])).toEqual(
      metrics(fullDir).map((m) => [m.rewardNormMean, m.rewardNormStd]),
    );
    expect(lines.at(-1)?.rewardNormMean[RULE_SCORER_ID]).toBeCloseTo(
      state.rewardNorm[RULE_SCORER_ID].mean,
      12,
    );
  }, 600_000);
});
