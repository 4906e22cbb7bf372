/**
 * `--model <dir>` end to end and `rlaif export`: embedded `rlaif train --model` on the GPT-2 and
 * Llama fixtures (tokenizer files included) changes the weights; `rlaif sample --model` prints
 * text of the model's tokenizer; an exported directory has the source's tensor names, shapes and
 * dtypes, and an independent PyTorch implementation (test/python/hf_reference.py) gives the
 * exported files the logits our model gives.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import {
  checkpointFromModel,
  loadCheckpoint,
  saveCheckpoint,
} from "../services/core/src/model/checkpoint.js";
import { exportCheckpoint } from "../services/core/src/model/hf-export.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { toBf16, toF16 } from "../services/core/src/model/safetensors-write.js";
import { describeTokenizer } from "../services/core/src/model/tokenizer.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";

const FIXTURES = path.join(import.meta.dirname, "fixtures", "hf");
const hasTorch = requireTool(TOOLS.pythonTorch);
const TOKENS = [
  [0, 5, 17, 33, 2, 40, 9, 11],
  [3, 8, 1, 60, 22, 14, 7, 30],
];

/** name → {dtype, shape} of a safetensors file's header. */
function header(file: string): Record<string, { dtype: string; shape: number[] }> {
  const raw = readFileSync(file);
  const json = JSON.parse(raw.subarray(8, 8 + Number(raw.readBigUInt64LE(0))).toString("utf8"));
  delete json.__metadata__;
  for (const t of Object.values(json) as { data_offsets?: unknown }[]) delete t.data_offsets;
  return json;
}

/** Every tensor header of a fixture directory (one file or the shards of its index). */
function sourceHeader(dir: string): Record<string, { dtype: string; shape: number[] }> {
  const files = readdirSync(dir).filter((f) => /^model.*\.safetensors$/.test(f));
  return Object.assign({}, ...files.map((f) => header(path.join(dir, f))));
}

function rlaif(args: string[]): string {
  return execFileSync(process.execPath, [RLAIF_BIN, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

describe("hf export", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("hf export - bf16 and fp16 round to nearest even", () => {
    expect(toBf16(1)).toBe(0x3f80);
    expect(toBf16(1 + 2 ** -8)).toBe(0x3f80); // a tie, to the even mantissa
    expect(toBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(toF16(1)).toBe(0x3c00);
    expect(toF16(65504)).toBe(0x7bff);
    expect(toF16(1e6)).toBe(0x7c00);
    expect(toF16(2 ** -24)).toBe(0x0001);
    expect(toF16(-2.5)).toBe(0xc100);
    expect(toF16(1 + 2 ** -11)).toBe(0x3c00);
  });

  for (const name of ["gpt2", "gpt2-hub", "llama", "llama-bf16-sharded", "qwen2"]) {
    it.skipIf(!hasTorch)(
      `hf export - ${name}: same names, shapes, dtypes; PyTorch logits of the export equal ours`,
      async () => {
        const dir = mkdtempSync(path.join(tmpdir(), `rlaif-export-${name}-`));
        const model = await loadModel(path.join(FIXTURES, name));
        // move every weight, so the export cannot pass by copying the source file
        const moved = new Map(
          [...model.getWeights()].map(([k, w]) => [
            k,
            { ...w, data: w.data.map((x, i) => x + 0.01 * Math.sin(i)) },
          ]),
        );
        model.setWeights(moved);
        // through a checkpoint file where the fixture has tokenizer files (a checkpoint needs them),
        // else straight from the model's checkpoint in memory
        const file = path.join(dir, "ckpt.safetensors");
        if (model.tokenizer) await saveCheckpoint(file, checkpointFromModel(model));
        const c = model.tokenizer
          ? await loadCheckpoint(file)
          : {
              ...checkpointFromModel(model),
              kind: model.kind,
              tokenizer: describeTokenizer(),
              state: new Map(),
            };
        const out = path.join(dir, "out");
        await exportCheckpoint(c, out);
        expect(header(path.join(out, "model.safetensors"))).toEqual(
          Object.fromEntries(
            Object.entries(sourceHeader(path.join(FIXTURES, name))).filter(
              ([k]) => !/\.attn\.(bias|masked_bias)$/.test(k),
            ),
          ),
        );
        const ours = tf.tidy(() =>
          model.forward(tf.tensor2d(TOKENS, undefined, "int32"), undefined, { ops: "inference" }).dataSync(),
        );
        const back = await loadModel(out); // what the exported files hold, read back by our loader
        const reread = tf.tidy(() =>
          back.forward(tf.tensor2d(TOKENS, undefined, "int32"), undefined, { ops: "inference" }).dataSync(),
        );
        const ref = JSON.parse(
          execFileSync(
            PYTHON,
            [path.join(import.meta.dirname, "python", "hf_reference.py"), out, JSON.stringify(TOKENS)],
            { encoding: "utf8" },
          ),
        ).logits as number[];
        const scale = Math.max(...ref.map(Math.abs));
        const err = (a: ArrayLike<number>) =>
          Math.max(...ref.map((r, i) => Math.abs(r - (a[i] as number)))) / scale;
        expect(err(reread), `${name} exported files vs PyTorch`).toBeLessThan(1e-5);
        // a float32 source round-trips exactly; a 16-bit one within its rounding
        const lossy = Object.values(sourceHeader(path.join(FIXTURES, name))).some((t) => t.dtype !== "F32");
        expect(err(ours), `${name} our model vs PyTorch on the export`).toBeLessThan(lossy ? 5e-2 : 1e-5);
        model.dispose();
        back.dispose();
      },
    );
  }

  it("hf export - a checkpoint of the project's own kind becomes its safetensors and a config naming the kind", async () => {
    const out = mkdtempSync(path.join(tmpdir(), "rlaif-export-own-"));
    const c = await loadCheckpoint(
      path.join(import.meta.dirname, "..", "checkpoints", "transformer", "model.safetensors"),
    );
    await exportCheckpoint(c, out);
    const config = JSON.parse(readFileSync(path.join(out, "config.json"), "utf8"));
    expect(config.rlaif_kind).toBe(c.kind);
    expect(Object.keys(header(path.join(out, "model.safetensors"))).sort()).toEqual(
      [...c.weights.keys()].sort(),
    );
  });

  for (const name of ["gpt2", "llama"]) {
    it(`hf export - rlaif train --model ${name} runs over gRPC and moves the weights; sample prints its tokenizer's text`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), `rlaif-train-${name}-`));
      const args = [
        "train",
        "--model",
        path.join(FIXTURES, name),
        "--steps",
        "2",
        "--prompt",
        "the cat",
        "--prompt",
        "on the",
      ];
      const summary = JSON.parse(
        rlaif([
          ...args,
          "--max-new-tokens",
          "6",
          "--prompts-per-step",
          "2",
          "--samples-per-prompt",
          "2",
          "--lr",
          "0.01",
          "--out",
          dir,
          "--json",
        ])
          .trim()
          .split("\n")
          .at(-1) as string,
      );
      expect(summary.steps).toBe(2);
      const final = await loadCheckpoint(summary.checkpointPath);
      expect(final.kind).toBe(name === "gpt2" ? "hf-gpt2" : "hf-llama");
      expect(final.tokenizer).toMatchObject({ kind: "hf", dir: path.join(FIXTURES, name) });
      const start = await loadModel(path.join(FIXTURES, name));
      const w0 = start.getWeights();
      const changed = [...final.weights].filter(([k, w]) => w.data.some((x, i) => x !== w0.get(k)?.data[i]));
      expect(changed.length).toBeGreaterThan(0);
      start.dispose();
      const prompts = path.join(dir, "prompts.txt");
      writeFileSync(prompts, "the cat\n");
      const line = JSON.parse(
        rlaif(["sample", "--model", path.join(FIXTURES, name), "--prompts", prompts, "--json"]),
      );
      // the fixture's vocabulary has lowercase letters, space and .,!?' only: text outside it cannot appear
      expect(line.completions[0].text).toMatch(/^[a-z .,!?'\n]*$/);
      expect(line.completions[0].tokens).toBeGreaterThan(0);
    }, 120_000);
  }

  it("hf export - --model names what a directory lacks (exit 2)", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rlaif-nomodel-"));
    writeFileSync(path.join(dir, "p.txt"), "the cat\n");
    let err: { status?: number; stderr?: string } = {};
    try {
      rlaif(["sample", "--model", path.join(FIXTURES, "gpt2-hub"), "--prompts", path.join(dir, "p.txt")]);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.status).toBe(2);
    expect(err.stderr).toContain("has no tokenizer.json");
  });
});
