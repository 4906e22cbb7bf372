/**
 * The size benchmark, shortened for CI: `bench/hf-size.ts --smoke --json` writes each of the
 * three architectures (tiny shapes) as a Hugging Face directory, loads it with the real loader,
 * samples and takes two learner steps, and reports every figure the README table quotes. No
 * timing is asserted: times on a shared machine say nothing about correctness. The full run is
 * `npx tsx bench/hf-size.ts`.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { WASM_HEAP_BYTES } from "../bench/hf-size/measure.js";
import {
  type Architecture,
  parameterCount,
  REAL_ARCHITECTURES,
  SMOKE_ARCHITECTURES,
  writeRandomHfDir,
} from "../bench/hf-size/random-dir.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { parseHfConfig } from "../services/core/src/model/hf-config.js";
import { loadHfModel } from "../services/core/src/model/hf-model-dir.js";
import { runBench } from "./helpers/run-bench.js";

describe("hf size benchmark", () => {
  it("hf size benchmark - the real shapes have the published parameter counts", () => {
    const counts = Object.fromEntries(REAL_ARCHITECTURES.map((a) => [a.name, parameterCount(a)]));
    expect(counts).toEqual({
      "gpt2-124m": 124_439_808,
      "smollm2-135m": 134_515_008,
      "tinyllama-1.1b": 1_100_048_384,
    });
    for (const a of REAL_ARCHITECTURES) expect(() => parseHfConfig(a.config, a.name)).not.toThrow();
    // the reason the 1.1B model is reported instead of run on wasm
    expect((counts["tinyllama-1.1b"] as number) * 4).toBeGreaterThan(WASM_HEAP_BYTES);
  });

  it("hf size benchmark - a model above the shard size is written as shards the loader reads", async () => {
    await initBackend("wasm");
    const arch = SMOKE_ARCHITECTURES[2] as Architecture;
    const dir = await mkdtemp(join(tmpdir(), "hf-size-test-"));
    try {
      await writeRandomHfDir(arch, dir, 1, 4096);
      const files = await readdir(dir);
      expect(files).toContain("model.safetensors.index.json");
      expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
      const { model } = await loadHfModel(dir);
      const params = [...model.getWeights().values()].reduce((n, w) => n + w.data.length, 0);
      expect(params).toBe(parameterCount(arch));
      model.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ["full fine-tuning", []],
    ["LoRA rank 2", ["--lora", "2"]],
  ])("hf size benchmark - a smoke run with %s reports every figure for every architecture", (_, extra) => {
    const r = runBench("hf-size.ts", ["--smoke", "--json", ...extra], 120_000);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(report.backend).toMatch(/^(wasm|tensorflow|cpu)/);
    expect(report.shapes.loraRank).toBe(extra.length > 0 ? 2 : 0);
    const names = report.results.map((x: { name: string }) => x.name);
    expect(names).toEqual(["gpt2-tiny", "smollm2-tiny", "tinyllama-tiny"]);
    for (const x of report.results) {
      expect(x.skipped, x.name).toBeUndefined();
      expect(x.params, x.name).toBeGreaterThan(0);
      for (const key of ["loadMs", "rssAfterLoadMb", "samplingTokensPerSecond", "rssAfterLearnerMb"]) {
        expect(Number.isFinite(x[key]) && x[key] > 0, `${x.name} ${key}`).toBe(true);
      }
      expect(x.learnerStepMs, x.name).toHaveLength(2);
      expect(x.lossFinite, x.name).toBe(true);
    }
  });

  it("hf size benchmark - an unknown architecture is a usage error naming the flag", () => {
    const r = runBench("hf-size.ts", ["--only", "gpt5"], 60_000);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--only: unknown gpt5/);
  });
});
