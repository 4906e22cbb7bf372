/**
 * Exact resume (docs/architecture.md#exact-resume): a run stopped after step k and resumed from its checkpoint ends with
 * weights, Adam moments, baseline and β bitwise identical to an uninterrupted run with the same
 * seed on the same backend (with maxStaleness 1, each step's samples are still applied once);
 * metrics.jsonl holds each step once; a kill while a checkpoint is
 * written leaves the previous one intact; the checkpoint is a weights file Python can read.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, readdirSync, readFileSync, statSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { RunSettings } from "../services/core/src/config/settings.js";
import { ValidationError } from "../services/core/src/errors.js";
import { loadCheckpoint, modelFromCheckpoint } from "../services/core/src/model/checkpoint.js";
import { resumeSettings } from "../services/optimizer/resume-settings.js";
import {
  checkpointFileName,
  listRunCheckpoints,
  openResumeCheckpoint,
  pruneRunCheckpoints,
} from "../services/optimizer/run-checkpoint.js";
import { readSamples, SAMPLES_FILE } from "../services/optimizer/step-samples.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";
import { differingTensors, resumeToEnd, runAndCrash, runToEnd, tensorBytes } from "./helpers/resume-runs.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const hasNumpy = requireTool(TOOLS.pythonNumpy);

function metricSteps(dir: string): number[] {
  return readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => Number(JSON.parse(l).step));
}

const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** Learner state whose every part matters: an EMA baseline, adaptive β, AdamW, warm-up. */
const STATEFUL: Partial<RunSettings> = {
  baseline: "moving-average",
  baselineDecay: 0.7,
  klCoef: 0.1,
  klTarget: 0.5,
  klHorizon: 50,
  weightDecay: 0.01,
  warmupSteps: 2,
  seed: 11,
};

/** Asserts two runs' last step checkpoints and final policies are equal, byte for byte. */
async function expectSameEnd(fullDir: string, dir: string, steps: number): Promise<void> {
  const a = await tensorBytes(join(fullDir, checkpointFileName(steps)));
  const b = await tensorBytes(join(dir, checkpointFileName(steps)));
  // Weights, Adam moments (optimizer.m/v.*) and reference weights.
  expect([...a.keys()].filter((n) => n.startsWith("optimizer.m.")).length).toBeGreaterThan(0);
  expect([...a.keys()].filter((n) => n.startsWith("reference.")).length).toBeGreaterThan(0);
  expect(differingTensors(a, b)).toEqual([]);
  const finals = [join(fullDir, "final.safetensors"), join(dir, "final.safetensors")] as const;
  expect(differingTensors(await tensorBytes(finals[0]), await tensorBytes(finals[1]))).toEqual([]);
  // Baseline, β and Adam's update count and hyperparameters.
  const ma = (await loadCheckpoint(join(fullDir, checkpointFileName(steps)))).metadata;
  const mb = (await loadCheckpoint(join(dir, checkpointFileName(steps)))).metadata;
  expect(mb.learnerState).toBe(ma.learnerState);
  expect(mb.optimizer).toBe(ma.optimizer);
  expect(JSON.parse(mb.optimizer as string)).toMatchObject({ type: "adamw", step: steps });
}

describe("optimizer resume", () => {
  let start: string;
  beforeAll(async () => {
    start = await writeTinyCheckpoint(5);
  });

  it("resume - a run crashed after step 3 and resumed from step 2 ends bitwise equal to an uninterrupted run", async () => {
    const settings = { ...STATEFUL, steps: 4, checkpointEvery: 2 };
    const fullDir = await runToEnd(tinyRunConfig(start, settings));
    const crashed = tinyRunConfig(start, settings);
    const dir = await runAndCrash(crashed, 3);
    // The crash came after step 3: its metrics line is written, the newest checkpoint is step 2.
    expect(metricSteps(dir)).toEqual([1, 2, 3]);
    expect((await listRunCheckpoints(dir)).map((f) => f.step)).toEqual([2]);

    expect(readSamples(dir).map((s) => s.step)).toEqual([1, 2, 3]);

    expect(await resumeToEnd(crashed, dir)).toEqual({ dir, step: 2 });
    expect(metricSteps(dir)).toEqual([1, 2, 3, 4]);
    // The sample table too: step 3 once, re-run from the same seeds, as the uninterrupted run wrote it.
    expect(readFileSync(join(dir, SAMPLES_FILE), "utf8")).toBe(
      readFileSync(join(fullDir, SAMPLES_FILE), "utf8"),
    );
    expect(readSamples(dir).map((s) => s.step)).toEqual([1, 2, 3, 4]);
    await expectSameEnd(fullDir, dir, 4);
    // β did adapt, so the restored learner state mattered.
    const state = JSON.parse(
      (await loadCheckpoint(join(dir, checkpointFileName(4)))).metadata.learnerState ?? "",
    );
    expect(state.kl.beta).not.toBe(0.1);
    expect(state.baseline.updates).toBe(4);
  });

  it("resume - a run with maxStaleness 1 crashed after step 3 resumes from step 2, applies every step's samples once and ends bitwise equal to an uninterrupted run", async () => {
    const settings = {
      ...STATEFUL,
      steps: 4,
      checkpointEvery: 2,
      maxStaleness: 1,
      offPolicy: "ppo-clip" as const,
    };
    const fullDir = await runToEnd(tinyRunConfig(start, settings));
    const crashed = tinyRunConfig(start, settings);
    // Step 4's jobs were already out when the run stopped after step 3: they die with the attempt.
    const dir = await runAndCrash(crashed, 3);
    expect(await resumeToEnd(crashed, dir)).toEqual({ dir, step: 2 });
    const lines = readFileSync(join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    for (const m of lines) expect(m.trajectories).toBe(8);
    // Every step after the first trains on samples of the version before: exactly one behind.
    expect(lines.map((m) => m.sampleStaleness ?? 0)).toEqual([0, 1, 1, 1]);
    // The step-2 checkpoint kept the weights the replicas served (step 1's) to sample step 3 again.
    const at2 = await loadCheckpoint(join(dir, checkpointFileName(2)));
    expect(JSON.parse(at2.metadata.runProgress ?? "").servedStep).toBe(1);
    // Its trajectory ledger: the ids steps 1 and 2 applied, and step 3's jobs out when it was written.
    const ledger = JSON.parse(at2.metadata.trajectoryLedger ?? "");
    expect(Object.keys(ledger.applied)).toEqual(["1", "2"]);
    expect(ledger.applied["2"]).toHaveLength(8);
    expect(ledger.queuedThrough).toBe(3);
    await expectSameEnd(fullDir, dir, 4);
  });

  it("resume - with publishEvery 2 a checkpoint at odd step 3 carries the served weights and resumes exactly", async () => {
    const settings = {
      ...STATEFUL,
      baseline: "rloo" as const,
      lrDecay: "cosine" as const,
      steps: 5,
      publishEvery: 2,
      checkpointEvery: 3,
    };
    const fullDir = await runToEnd(tinyRunConfig(start, settings));
    const crashed = tinyRunConfig(start, settings);
    const dir = await runAndCrash(crashed, 4);
    const at3 = await loadCheckpoint(join(dir, checkpointFileName(3)));
    // The replicas served step 2's weights at step 3: the checkpoint keeps them to republish.
    expect([...at3.state.keys()].some((n) => n.startsWith("published."))).toBe(true);
    expect(JSON.parse(at3.metadata.runProgress ?? "").servedStep).toBe(2);
    await resumeToEnd(crashed, dir);
    expect(metricSteps(dir)).toEqual([1, 2, 3, 4, 5]);
    await expectSameEnd(fullDir, dir, 5);
  });

  it("resume - LoRA runs (seeded dropout; served adapters saved or rebuilt) crashed and resumed end bitwise equal to uninterrupted runs", async () => {
    const lora = { ...STATEFUL, loraRank: 4, loraAlpha: 8, loraDropout: 0.1, steps: 5 };
    // Resumed from step 2 of a synchronous run (the replicas serve the learner's adapters) and
    // from step 3 of one publishing every 2 (they serve step 2's adapters, kept as published.*).
    for (const [settings, crashAfter, from] of [
      [{ ...lora, checkpointEvery: 2, maxStaleness: 0 }, 3, 2],
      [{ ...lora, checkpointEvery: 3, publishEvery: 2 }, 4, 3],
    ] as const) {
      const fullDir = await runToEnd(tinyRunConfig(start, settings));
      const crashed = tinyRunConfig(start, settings);
      const dir = await runAndCrash(crashed, crashAfter);
      const saved = await loadCheckpoint(join(dir, checkpointFileName(from)));
      const names = [...saved.state.keys()];
      expect(names.filter((n) => n.startsWith("published.")).every((n) => /lora_[AB]/.test(n))).toBe(true);
      expect(names.some((n) => n.startsWith("published."))).toBe(from === 3);
      expect(await resumeToEnd(crashed, dir)).toEqual({ dir, step: from });
      await expectSameEnd(fullDir, dir, 5);
      // Only the adapters train: Adam's moments are theirs, the base is the start's, bitwise.
      const end = await tensorBytes(join(dir, checkpointFileName(5)));
      const moments = [...end.keys()].filter((n) => n.startsWith("optimizer.m."));
      expect(moments.length).toBeGreaterThan(0);
      expect(moments.every((n) => /\.lora_[AB]\.weight$/.test(n))).toBe(true);
      const base = await tensorBytes(start);
      expect(differingTensors(base, new Map([...end].filter(([n]) => base.has(n))))).toEqual([]);
      const b = [...end].find(([n]) => n.startsWith("lora.") && n.endsWith("lora_B.weight"));
      expect(b && new Float32Array(b[1].buffer, b[1].byteOffset, b[1].length / 4).some((x) => x !== 0)).toBe(
        true,
      );
    }
  });

  it("checkpoint - a resumable checkpoint is still a weights file: it loads as a model and keeps the newest checkpointKeep", async () => {
    const config = tinyRunConfig(start, { steps: 3, checkpointEvery: 1, checkpointKeep: 2 });
    const dir = await runToEnd(config);
    expect((await listRunCheckpoints(dir)).map((f) => f.step)).toEqual([3, 2]);
    const c = await loadCheckpoint(join(dir, checkpointFileName(3)));
    const model = modelFromCheckpoint(c);
    expect(model.kind).toBe("transformer");
    model.dispose();
    expect(JSON.parse(c.metadata.rngState ?? "")).toMatchObject({ seed: 1, nextStep: 4 });
    expect(JSON.parse(c.metadata.runConfig ?? "").prompts).toEqual(config.run.prompts);
    expect(c.metadata).toMatchObject({ step: "3", runId: expect.stringMatching(/^run-/) });
  });

  it("checkpoint - a kill while a checkpoint is written leaves the previous one intact and resumable", async () => {
    const config = tinyRunConfig(start, { steps: 1 });
    const dir = await runToEnd(config);
    const file = join(dir, checkpointFileName(1));
    const before = sha(file);
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "helpers", "torn-write-child.ts"), file],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => d.toString().includes("torn") && resolve());
      child.on("exit", (code) => reject(new Error(`child exited with ${code} before the torn write`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    // Half a new file lies next to it; the checkpoint itself is byte for byte the old one.
    const temps = readdirSync(dir).filter((n) => n.startsWith(".step-000001.safetensors.tmp-"));
    expect(temps).toHaveLength(1);
    expect(statSync(join(dir, temps[0] as string)).size).toBeLessThan(statSync(file).size);
    expect(sha(file)).toBe(before);
    expect((await openResumeCheckpoint(dir)).step).toBe(1);
    await pruneRunCheckpoints(dir, 2);
    expect(readdirSync(dir).filter((n) => n.includes(".tmp-"))).toEqual([]);
    // And the run continues from it (a finished run needs a larger total of steps).
    await expect(resumeToEnd(config, dir)).rejects.toBeInstanceOf(ValidationError);
    await resumeToEnd(config, dir, { steps: 2 });
    expect(metricSteps(dir)).toEqual([1, 2]);
  });

  it("checkpoint - a damaged newest checkpoint is skipped for the next older one", async () => {
    const dir = await runToEnd(tinyRunConfig(start, { steps: 2, checkpointEvery: 1 }));
    copyFileSync(join(dir, checkpointFileName(2)), join(dir, checkpointFileName(3)));
    truncateSync(join(dir, checkpointFileName(3)), 1000);
    const skipped: string[] = [];
    const cp = await openResumeCheckpoint(dir, (line) => skipped.push(line));
    expect(cp.step).toBe(2);
    expect(skipped.join()).toMatch(/step-000003\.safetensors: invalid checkpoint/);
  });

  it("resume - settings: only steps and checkpointing may change, float32 round-off is no change", async () => {
    const saved = { ...tinyRunConfig(start).run, learningRate: 3e-4 };
    const name = (k: string) => `--${k}`;
    expect(
      resumeSettings(saved, { learningRate: Math.fround(3e-4), checkpointEvery: 1 }, 1, name),
    ).toMatchObject({
      learningRate: 3e-4,
      checkpointEvery: 1,
    });
    expect(() => resumeSettings(saved, { learningRate: 1e-3 }, 1, name)).toThrow(
      /--learningRate: the run was started with 0.0003, got 0.001; a resumed run keeps its settings/,
    );
    expect(() => resumeSettings(saved, { prompts: ["other"] }, 1, name)).toThrow(/--prompts/);
    expect(() => resumeSettings(saved, { steps: 3 }, 3, name)).toThrow(
      /--steps: the checkpoint is at step 3 of 3/,
    );
  });

  it("checkpoint - Python reads a resumable checkpoint with json + numpy, every tensor byte for byte", async (ctx) => {
    if (!hasNumpy) ctx.skip();
    const dir = await runToEnd(tinyRunConfig(start, { steps: 1 }));
    const file = join(dir, checkpointFileName(1));
    const script = [
      "import hashlib, json, struct, sys, numpy as np",
      "b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])",
      "meta = h.pop('__metadata__')",
      "out = {k: hashlib.sha256(np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], '<f4').reshape(v['shape']).tobytes()).hexdigest() for k, v in h.items()}",
      "print(json.dumps({'tensors': out, 'step': json.loads(meta['optimizer'])['step']}))",
    ].join("\n");
    const r = spawnSync(PYTHON, ["-c", script, file], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    const py = JSON.parse(r.stdout);
    const ours = Object.fromEntries(
      [...(await tensorBytes(file))].map(([k, v]) => [k, createHash("sha256").update(v).digest("hex")]),
    );
    expect(py.tensors).toEqual(ours);
    expect(py.step).toBe(1);
  });
});
