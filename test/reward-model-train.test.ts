/**
 * `rlaif train --reward-model <dir>`: a run whose only feedback is a reward model learnt from a
 * rule's labels, end to end through the CLI (the RM's learning effect is measured by
 * bench/rm-learning.ts, docs/reward-model.md).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { labelPairs, scorerLabeller } from "../services/cli/preference-labelling.js";
import { DEFAULT_HEAD_TRAINING } from "../services/core/src/learn/reward-head.js";
import { trainRewardModel } from "../services/core/src/learn/reward-model-training.js";
import { startBackend } from "../services/core/src/model/backend.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { RM_FORMAT_VERSION } from "../services/core/src/model/reward-model.js";
import { compositeScorer } from "../services/feedback/composite-scorer.js";
import { REWARD_MODEL_SCORER_ID } from "../services/feedback/reward-model-scorer.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";

const BACKBONE = "checkpoints/gru/model.safetensors";

beforeAll(async () => {
  await startBackend("auto");
});

describe("reward model training run", () => {
  it("reward model training run - rlaif train --reward-model runs two steps scored by the RM alone and records it as the run's scorer", async () => {
    const model = await loadModel(BACKBONE);
    const rmDir = mkdtempSync(path.join(tmpdir(), "rlaif-rm-run-"));
    const run = { maxNewTokens: 8, temperature: 1, topK: 0, topP: 1, seed: 1 };
    const res = await labelPairs(
      model,
      heldOutPrompts(64, 1),
      400,
      run,
      scorerLabeller(compositeScorer("length(2-3):1")),
    );
    trainRewardModel(res.labels, {
      backbone: model,
      backbonePath: BACKBONE,
      labelsFile: "labels.jsonl",
      outDir: rmDir,
      heldOutShare: 0,
      head: DEFAULT_HEAD_TRAINING,
      log: () => {},
    });
    model.dispose();
    const out = mkdtempSync(path.join(tmpdir(), "rlaif-rm-train-"));
    const r = spawnSync(
      process.execPath,
      [
        RLAIF_BIN,
        "train",
        "--checkpoint",
        BACKBONE,
        "--reward-model",
        rmDir,
        "--backend",
        "wasm",
        "--out",
        out,
        "--steps",
        "2",
        "--prompts-per-step",
        "2",
        "--samples-per-prompt",
        "2",
        "--max-new-tokens",
        "8",
        "--json",
      ],
      { encoding: "utf8", timeout: 150_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(summary.steps).toBe(2);
    const runDir = path.join(out, summary.runId);
    const metrics = readFileSync(path.join(runDir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.step)).toEqual([1, 2]);
    expect(metrics.every((m) => Number.isFinite(m.meanReward))).toBe(true);
    const provenance = JSON.parse(readFileSync(path.join(runDir, "config.json"), "utf8")).provenance;
    expect(provenance.feedback.inProcess).toBe(true);
    expect(provenance.feedback.scorers).toEqual([
      { id: REWARD_MODEL_SCORER_ID, version: `${RM_FORMAT_VERSION}` },
    ]);
    // The held-out report scores with AFINN, which did not score this run: it says so instead.
    expect(r.stderr).toMatch(/held-out report skipped: .*scored by the reward model .* alone/);
  }, 240_000);
});
