import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { sha256Hex } from "../services/core/src/hash.js";
import { initBackend } from "../services/core/src/model/backend.js";
import type { CausalLM } from "../services/core/src/model/causal-lm.js";
import { checkpointFromModel, createModel, encodeCheckpoint } from "../services/core/src/model/checkpoint.js";
import { attachLora, type LoraAdapters, type LoraSpec, withBase } from "../services/core/src/model/lora.js";
import {
  checkAdapterBase,
  decodeAdapterBlob,
  encodeAdapterBlob,
  isAdapterBlob,
  mergedWeights,
  peftAdapterFiles,
} from "../services/core/src/model/lora-files.js";
import { decodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import type { TransformerConfig } from "../services/core/src/model/transformer-config.js";
import { scaledError } from "./helpers/model-checks.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";

const CONFIG: TransformerConfig = { vocabSize: 13, contextLength: 8, dModel: 8, nLayers: 2, nHeads: 2 };
const SPEC: LoraSpec = { rank: 2, alpha: 4, dropout: 0, targets: [] };
const TOKENS = [
  [1, 5, 2, 9, 3],
  [4, 4, 7, 0, 12],
];

/** A model with adapters whose B is random too (a fresh B = 0 would hide A's gradient). */
function adapted(spec: LoraSpec = SPEC): { model: CausalLM; lora: LoraAdapters } {
  const model = createModel(CONFIG, 3);
  const lora = attachLora(model, spec, 5);
  for (const v of lora.variables()) v.assign(tf.randomNormal(v.shape, 0, 0.3, "float32", 11));
  return { model, lora };
}

function logitsOf(model: CausalLM, ops: "train" | "inference" | "reference" = "train"): Float32Array {
  return tf.tidy(
    () =>
      model.forward(tf.tensor2d(TOKENS, undefined, "int32"), undefined, { ops }).dataSync() as Float32Array,
  );
}

describe("lora", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  it("lora - fresh adapters (B = 0) and adapters off give the base model's logits bitwise", () => {
    const model = createModel(CONFIG, 3);
    const base = logitsOf(model);
    const lora = attachLora(model, SPEC, 5);
    expect(lora.variables()).toHaveLength(2 * 4 * CONFIG.nLayers);
    expect(logitsOf(model)).toEqual(base);
    for (const v of lora.variables()) v.assign(tf.onesLike(v));
    expect(logitsOf(model)).not.toEqual(base);
    expect(withBase(model, () => logitsOf(model))).toEqual(base);
  });

  it("lora - adapter gradients equal central finite differences", () => {
    const { model, lora } = adapted();
    const g = tf.randomNormal([2, 5, CONFIG.vocabSize], 0, 1, "float32", 2);
    const loss = () => tf.sum(tf.mul(model.forward(tf.tensor2d(TOKENS, undefined, "int32")), g)) as tf.Scalar;
    const { grads } = tf.variableGrads(loss, lora.variables());
    expect(Object.keys(grads)).toHaveLength(lora.variables().length);
    const eps = 1e-2;
    for (const v of [lora.variables()[0], lora.variables()[3], lora.variables().at(-1)] as tf.Variable[]) {
      const data = v.dataSync().slice() as Float32Array;
      const analytic = (grads[v.name] as tf.Tensor).dataSync();
      for (const i of [0, data.length - 1]) {
        const at = (d: number) => {
          const copy = data.slice();
          copy[i] = (copy[i] as number) + d;
          v.assign(tf.tensor(copy, v.shape));
          return tf.tidy(() => loss().dataSync()[0] as number);
        };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        v.assign(tf.tensor(data, v.shape));
        expect(Math.abs(numeric - (analytic[i] as number))).toBeLessThan(
          2e-2 * Math.max(1, Math.abs(numeric)),
        );
      }
    }
  });

  it("lora - dropout only in training passes, the same mask for the same seed", () => {
    const { model, lora } = adapted({ ...SPEC, dropout: 0.5 });
    const plain = logitsOf(model);
    lora.dropoutSeed = 42;
    const a = logitsOf(model);
    const b = logitsOf(model);
    lora.dropoutSeed = 43;
    const c = logitsOf(model);
    lora.dropoutSeed = null;
    expect(a).toEqual(b);
    expect(a).not.toEqual(plain);
    expect(c).not.toEqual(a);
    expect(logitsOf(model)).toEqual(plain);
  });

  it("lora - merged weights give the adapted model's logits (Conv1D layout transposed)", () => {
    const { model, lora } = adapted();
    const merged = createModel(CONFIG, mergedWeights(model, lora));
    expect(scaledError(logitsOf(merged), logitsOf(model))).toBeLessThan(1e-5);
    expect(scaledError(logitsOf(model, "inference"), logitsOf(model))).toBeLessThan(1e-5);
  });

  it("lora - adapter blobs: much smaller than the full weights, bound to their base's SHA-256", () => {
    const { model, lora } = adapted({ ...SPEC, targets: ["c_attn"] });
    const full = encodeCheckpoint(checkpointFromModel(model));
    const base = sha256Hex(full);
    const blob = encodeAdapterBlob(lora, base);
    console.log(`lora: adapter blob ${blob.length} B vs full ${full.length} B`);
    expect(blob.length * 4).toBeLessThan(full.length);
    expect(isAdapterBlob(blob)).toBe(true);
    expect(isAdapterBlob(full)).toBe(false);
    const back = decodeAdapterBlob(blob);
    expect(back.spec.rank).toBe(2);
    expect([...back.weights.keys()].sort()).toEqual([...lora.getWeights().keys()].sort());
    expect(() => checkAdapterBase(back, base)).not.toThrow();
    expect(() => checkAdapterBase(back, "0".repeat(64))).toThrow(/adapters apply to base/);
  });

  it("lora - PEFT files carry PEFT's key names, shapes and config", () => {
    const { lora } = adapted({ ...SPEC, targets: ["c_attn", "mlp.c_proj"] });
    const files = peftAdapterFiles(lora);
    const config = JSON.parse(files.config);
    expect(config).toMatchObject({ peft_type: "LORA", r: 2, lora_alpha: 4, fan_in_fan_out: true });
    expect(config.target_modules).toEqual(["c_attn", "mlp.c_proj"]);
    const { tensors, metadata } = decodeSafetensors(files.safetensors, "peft");
    expect(metadata).toEqual({ format: "pt" });
    expect(tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")?.shape).toEqual([2, 8]);
    expect(tensors.get("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight")?.shape).toEqual([24, 2]);
    expect(tensors.get("base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight")?.shape).toEqual([2, 32]);
    expect(tensors.size).toBe(8);
  });

  it("lora - an unknown target is refused naming run.loraTargets", () => {
    const model = createModel(CONFIG, 3);
    expect(() => attachLora(model, { ...SPEC, targets: ["q_proj"] }, 1)).toThrow(/run\.loraTargets/);
  });

  it("lora - logits and adapter gradients equal a float64 PyTorch reference to 1e-5", (ctx) => {
    if (!requireTool(TOOLS.pythonTorch)) return ctx.skip();
    const { model, lora } = adapted({ ...SPEC, targets: ["c_attn", "c_proj", "c_fc"] });
    const g = tf.randomNormal([2, 5, CONFIG.vocabSize], 0, 1, "float32", 2);
    const plain = (w: Map<string, { shape: number[]; data: Float32Array }>) =>
      Object.fromEntries([...w].map(([k, v]) => [k, { shape: v.shape, data: [...v.data] }]));
    const weights = plain(model.getWeights());
    const dir = mkdtempSync(join(tmpdir(), "rlaif-lora-"));
    writeFileSync(
      join(dir, "case.json"),
      JSON.stringify({
        config: CONFIG,
        rank: SPEC.rank,
        alpha: SPEC.alpha,
        weights,
        adapters: plain(lora.getWeights()),
        tokens: TOKENS,
        cotangent: { shape: g.shape, data: [...g.dataSync()] },
      }),
    );
    const run = spawnSync(
      PYTHON,
      [
        join(import.meta.dirname, "python", "lora_reference.py"),
        join(dir, "case.json"),
        join(dir, "out.json"),
      ],
      { encoding: "utf8" },
    );
    expect(run.stderr).toBe("");
    const ref = JSON.parse(readFileSync(join(dir, "out.json"), "utf8")) as Record<string, number[]>;
    expect(scaledError(logitsOf(model), ref.logits as number[])).toBeLessThan(1e-5);
    const loss = () => tf.sum(tf.mul(model.forward(tf.tensor2d(TOKENS, undefined, "int32")), g)) as tf.Scalar;
    const { grads } = tf.variableGrads(loss, lora.variables());
    for (const [name, v] of lora.params()) {
      const err = scaledError((grads[v.name] as tf.Tensor).dataSync(), ref[`grad.${name}`] as number[]);
      expect(err, name).toBeLessThan(1e-5);
    }
  });
});
