/**
 * The held-out report that ends `rlaif train`: the evaluation itself on tiny random models, the
 * pair rule, the flag, and the command's stderr and held-out.json on a one-step run.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import {
  evaluateHeldOut,
  HELD_OUT_FILE,
  type HeldOutReport,
  heldOutEvalPrompts,
  heldOutLines,
  parseEvalPrompts,
  pickPair,
} from "../services/cli/held-out-eval.js";
import type { SampleQuality } from "../services/cli/sample-quality.js";
import { ConfigError } from "../services/core/src/errors.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { DEFAULT_PROMPT_COUNT } from "../services/optimizer/main.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

function rlaif(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [RLAIF_BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A measurement whose first samples have these rewards (other figures do not matter here). */
function quality(rewards: number[]): SampleQuality {
  return {
    meanReward: 0,
    stdReward: 0,
    positiveShare: 0,
    klToReference: 0,
    distinct2: 0,
    repetition: 0,
    referencePerplexity: 1,
    examples: rewards.map((reward, i) => ({ prompt: `p${i}`, completion: `c${i}`, reward })),
  };
}

/** A report of `start` → `final` on `count` held-out prompts, 2 samples each. */
const evaluate = (startModel: string, finalModel: string, prompts: string[], maxNewTokens: number) =>
  evaluateHeldOut({ startModel, finalModel, startStep: 0, prompts, maxNewTokens, samplesPerPrompt: 2 });

describe("held-out report", () => {
  let start: string;
  let final: string;
  beforeAll(async () => {
    start = await writeTinyCheckpoint(7);
    final = await writeTinyCheckpoint(8);
  });

  it("held-out report - a tiny random model gives finite figures and a pair of one prompt", async () => {
    const prompts = heldOutEvalPrompts(3, 1);
    const report = await evaluate(start, final, prompts, 8);
    for (const side of [report.before, report.after]) {
      for (const [k, v] of Object.entries(side)) {
        if (typeof v === "number") expect(Number.isFinite(v), k).toBe(true);
      }
      expect(side.examples.map((e) => e.prompt)).toEqual(prompts);
    }
    // The start model is the KL reference: KL 0 before (float error aside), not after.
    expect(Math.abs(report.before.klToReference)).toBeLessThan(1e-3);
    expect(Math.abs(report.after.klToReference)).toBeGreaterThan(1e-3);
    expect(report.pair.before.prompt).toBe(report.pair.prompt);
    expect(report.pair.after.prompt).toBe(report.pair.prompt);
    expect(report.pair).toEqual(pickPair(report.before, report.after));
    const lines = heldOutLines(report);
    expect(lines[0]).toMatch(/^held-out reward \(3 prompts × 2 samples\): [+-]\d\.\d\d → [+-]\d\.\d\d/);
    expect(lines[1]).toContain(`before: ${JSON.stringify(report.pair.prompt)} → `);
    expect(lines[2]).toContain(`after:  ${JSON.stringify(report.pair.prompt)} → `);
  });

  it("held-out report - a Hugging Face model directory is sampled and decoded with its own tokenizer", async () => {
    const dir = join(import.meta.dirname, "fixtures", "hf", "gpt2");
    const prompts = heldOutEvalPrompts(2, 1);
    const report = await evaluate(dir, dir, prompts, 4);
    // GPT-2 ids run to 50256: the byte tokenizer would refuse them, so this text is the model's own.
    // Same weights, same seed: the same samples and KL 0.
    expect(report.after.examples).toEqual(report.before.examples);
    expect(Math.abs(report.after.klToReference)).toBeLessThan(1e-3);
    // the fixture's 16 positions hold 4 new tokens after the shorter prompt only: the other is left out
    expect(report.prompts).toEqual(["Her ostensible"]);
    expect(prompts).toContain("Her ostensible");
    expect(report.before.examples.map((e) => e.prompt)).toEqual(report.prompts);
    expect(report.before.examples.some((e) => e.completion.length > 0)).toBe(true);
    expect(Number.isFinite(report.before.referencePerplexity)).toBe(true);
  });

  it("held-out report - the pair is the prompt with the largest first-sample gain, the earliest on a tie", () => {
    expect(pickPair(quality([0, 0.5, -1]), quality([0.2, 0.1, 0.3])).prompt).toBe("p2");
    expect(pickPair(quality([0, 0, 0]), quality([1, 1, 0])).prompt).toBe("p0");
    // Every prompt lost reward: the smallest loss is shown.
    const pair = pickPair(quality([-0.5, 0]), quality([-0.6, -0.2]));
    expect(pair).toEqual({
      prompt: "p0",
      before: { prompt: "p0", completion: "c0", reward: -0.5 },
      after: { prompt: "p0", completion: "c0", reward: -0.6 },
    });
  });

  it("held-out report - evaluation prompts follow the default training prompts and never repeat them", () => {
    const training = new Set(heldOutPrompts(DEFAULT_PROMPT_COUNT, 3));
    const evalPrompts = heldOutEvalPrompts(20, 3);
    expect(evalPrompts).toHaveLength(20);
    expect(evalPrompts.filter((p) => training.has(p))).toEqual([]);
    expect(evalPrompts).toEqual(heldOutPrompts(DEFAULT_PROMPT_COUNT + 20, 3).slice(DEFAULT_PROMPT_COUNT));
  });

  it("held-out report - --eval-prompts takes 0..256 and names itself otherwise", () => {
    expect(parseEvalPrompts(undefined)).toBe(16);
    expect(parseEvalPrompts("0")).toBe(0);
    expect(parseEvalPrompts("256")).toBe(256);
    for (const bad of ["257", "-1", "1.5", "many", ""]) {
      expect(() => parseEvalPrompts(bad), bad).toThrow(ConfigError);
      expect(() => parseEvalPrompts(bad), bad).toThrow(
        /--eval-prompts: must be a whole number between 0 and 256/,
      );
    }
    const r = rlaif("train", "--checkpoint", start, "--eval-prompts", "300");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--eval-prompts: .*got "300"/);
  });

  it("held-out report - rlaif train ends with the report on stderr and held-out.json, --json's last line stays the summary, a resumed run reports from its step", () => {
    const out = mkdtempSync(join(tmpdir(), "rlaif-held-out-"));
    const common = ["--checkpoint", start, "--backend", "wasm", "--out", out, "--steps", "1"];
    const small = ["--prompts-per-step", "2", "--samples-per-prompt", "2", "--max-new-tokens", "6"];
    // Own training prompts: the evaluation still takes the corpus prompts after the default ones.
    const r = rlaif(
      "train",
      ...common,
      ...small,
      "--prompt",
      "The film was",
      "--eval-prompts",
      "2",
      "--json",
    );
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(r.stdout).not.toMatch(/held-out reward|before:|after:/);
    expect(r.stderr).toMatch(
      /^held-out reward \(2 prompts × 4 samples\): [+-]\d\.\d\d → [+-]\d\.\d\d.*, positive \d+% → \d+%, KL -?\d+\.\d nats$/m,
    );
    const before = /^ {2}before: ("[^"]*") → /m.exec(r.stderr)?.[1];
    const after = /^ {2}after: {2}("[^"]*") → /m.exec(r.stderr)?.[1];
    expect(before).toBeDefined();
    expect(after).toBe(before);
    const report = JSON.parse(readFileSync(join(out, summary.runId, HELD_OUT_FILE), "utf8")) as HeldOutReport;
    expect(report.prompts).toEqual(heldOutEvalPrompts(2, 1));
    expect(report.evalSeed).toBeTypeOf("number");
    expect(report.samplesPerPrompt).toBe(4);
    expect(report.startModel).toBe(start);
    expect(report.finalModel).toBe(summary.checkpointPath);
    expect(JSON.parse(before as string)).toBe(report.pair.prompt);
    expect(report.before.examples).toHaveLength(2);
    expect(Number.isFinite(report.after.meanReward)).toBe(true);

    const quiet = rlaif("train", ...common, ...small, "--eval-prompts", "0", "--json");
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stderr).not.toMatch(/held-out (reward|report)/);
    const quietRun = JSON.parse(quiet.stdout.trim().split("\n").at(-1) as string).runId;
    expect(existsSync(join(out, quietRun, HELD_OUT_FILE))).toBe(false);

    // Resumed: "before" is the resumed-from checkpoint, and the report says which step that was.
    const resumed = rlaif("train", "--resume", join(out, quietRun), "--steps", "2", "--backend", "wasm");
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/^held-out reward from step 1 \(16 prompts × 4 samples\): /m);
    const again = JSON.parse(readFileSync(join(out, quietRun, HELD_OUT_FILE), "utf8")) as HeldOutReport;
    expect(again.startStep).toBe(1);
    expect(again.startModel).toMatch(/step-0*1\.safetensors$/);
  }, 90_000);
});
