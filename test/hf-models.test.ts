import { readFileSync } from "node:fs";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initBackend } from "../services/core/src/model/backend.js";
import type { CausalLM, WeightMap } from "../services/core/src/model/causal-lm.js";
import { gpt2WeightsToHf } from "../services/core/src/model/hf-gpt2.js";
import { type HfModel, loadHfModel } from "../services/core/src/model/hf-model-dir.js";
import { hfGpt2Name } from "../services/core/src/model/hf-parameters.js";
import { maskedCrossEntropy, selectLogprobs } from "../services/core/src/model/loss.js";
import { readSafetensorsFile } from "../services/core/src/model/safetensors.js";
import { scaledError } from "./helpers/model-checks.js";

/** Fixtures written by scripts/make-hf-fixtures.py with transformers' save_pretrained. */
const FIXTURES = path.join(import.meta.dirname, "fixtures", "hf");
const NAMES = ["gpt2", "gpt2-hub", "gpt2-fp16", "llama", "llama-bf16-sharded", "llama-tied", "qwen2"];

interface Reference {
  tokens: number[][];
  loss: number;
  /** logits, logprobs and grad.<Hugging Face parameter name>. */
  tensors: WeightMap;
}

async function reference(name: string): Promise<Reference> {
  const dir = path.join(FIXTURES, name);
  const json = JSON.parse(readFileSync(path.join(dir, "reference.json"), "utf8"));
  const into = { weights: new Map(), dtypes: new Map(), metadata: {} };
  await readSafetensorsFile(path.join(dir, "reference.safetensors"), into);
  return { tokens: json.tokens, loss: json.loss, tensors: into.weights };
}

/** The reference tensor `name` (it must exist). */
function ref(r: Reference, name: string): Float32Array {
  const t = r.tensors.get(name);
  if (t === undefined) throw new Error(`reference lacks ${name}`);
  return t.data;
}

/** Next-token batch of the reference tokens: x, y = x shifted left, the last position masked. */
function nextTokenBatch(tokens: number[][]): { x: tf.Tensor2D; y: tf.Tensor2D; mask: tf.Tensor2D } {
  const t = tokens[0]?.length ?? 0;
  return {
    x: tf.tensor2d(tokens, undefined, "int32"),
    y: tf.tensor2d(
      tokens.map((row) => [...row.slice(1), 0]),
      undefined,
      "int32",
    ),
    mask: tf.tensor2d(tokens.map(() => Array.from({ length: t }, (_, j) => (j < t - 1 ? 1 : 0)))),
  };
}

/** The Hugging Face name of a model parameter (GPT-2's are the Transformer's names). */
function hfName(model: CausalLM, param: string): string {
  return model.kind === "hf-gpt2" ? hfGpt2Name(param) : param;
}

describe("hf models", () => {
  const loaded = new Map<string, HfModel>();
  const refs = new Map<string, Reference>();
  beforeAll(async () => {
    await initBackend("wasm");
    for (const name of NAMES) {
      loaded.set(name, await loadHfModel(path.join(FIXTURES, name)));
      refs.set(name, await reference(name));
    }
  });
  afterAll(() => {
    for (const m of loaded.values()) m.model.dispose();
  });
  const get = (name: string) => ({ ...(loaded.get(name) as HfModel), r: refs.get(name) as Reference });

  for (const name of NAMES) {
    it(`hf models - ${name}: logits equal transformers' to 1e-4 (train and inference ops)`, () => {
      const { model, r } = get(name);
      const want = ref(r, "logits");
      for (const ops of ["train", "inference"] as const) {
        const x = tf.tensor2d(r.tokens, undefined, "int32");
        const logits = model.forward(x, undefined, { ops });
        expect(logits.shape).toEqual([r.tokens.length, r.tokens[0]?.length, model.config.vocabSize]);
        expect(scaledError(logits.dataSync(), want)).toBeLessThan(1e-4);
        tf.dispose([x, logits]);
      }
    });

    it(`hf models - ${name}: loss and every gradient equal PyTorch's to 1e-4`, () => {
      const { model, r } = get(name);
      const { x, y, mask } = nextTokenBatch(r.tokens);
      const { value, grads } = tf.variableGrads(
        () => maskedCrossEntropy(model.forward(x), y, mask),
        model.variables(),
      );
      expect(Math.abs((value.dataSync()[0] as number) - r.loss)).toBeLessThan(1e-5 * Math.max(1, r.loss));
      const byVar = new Map(model.variables().map((v) => [v.name, v]));
      const params = [...(model as unknown as { params: Map<string, tf.Variable> }).params];
      expect(Object.keys(grads)).toHaveLength(params.length);
      for (const [param, variable] of params) {
        const g = grads[variable.name] as tf.Tensor;
        expect(byVar.has(variable.name)).toBe(true);
        const err = scaledError(g.dataSync(), ref(r, `grad.${hfName(model, param)}`));
        expect(err, param).toBeLessThan(1e-4);
      }
      tf.dispose([x, y, mask, value, ...Object.values(grads)]);
    });
  }

  it("hf models - the completion's log-probs equal transformers'", () => {
    for (const name of ["gpt2", "llama", "qwen2"]) {
      const { model, r } = get(name);
      const { x, y } = nextTokenBatch(r.tokens);
      const lp = selectLogprobs(model.forward(x, undefined, { ops: "inference" }), y); // [B, T]
      const t = r.tokens[0]?.length ?? 0;
      const got = tf.slice(lp, [0, 0], [r.tokens.length, t - 1]);
      expect(scaledError(got.dataSync(), ref(r, "logprobs"))).toBeLessThan(1e-4);
      tf.dispose([x, y, lp, got]);
    }
  });

  it("hf models - fp16 and bf16 directories keep their dtypes and load the rounded values", () => {
    const fp16 = get("gpt2-fp16");
    const bf16 = get("llama-bf16-sharded");
    expect(new Set(fp16.dtypes.values())).toEqual(new Set(["F16"]));
    expect(new Set(bf16.dtypes.values())).toEqual(new Set(["BF16"]));
    // every bf16 value is a float32 with a zero lower half, and the fp32 model's value rounded
    const full = get("llama").model.getWeights();
    for (const [name, w] of bf16.model.getWeights()) {
      const bits = new Uint32Array(w.data.buffer, w.data.byteOffset, w.data.length);
      expect(bits.every((b) => (b & 0xffff) === 0)).toBe(true);
      const src = (full.get(name) as { data: Float32Array }).data;
      expect(scaledError(w.data, src)).toBeLessThan(2 ** -8);
    }
    // fp16 rounding moved the weights: the fixture is not the fp32 file under another name
    const a = fp16.model.getWeights().get("wte")?.data as Float32Array;
    const b = get("gpt2").model.getWeights().get("wte")?.data as Float32Array;
    expect(scaledError(a, b)).toBeGreaterThan(0);
    expect(scaledError(a, b)).toBeLessThan(2 ** -10);
  });

  it("hf models - both GPT-2 namings load to the same weights", () => {
    const a = get("gpt2").model.getWeights();
    const b = get("gpt2-hub").model.getWeights();
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, w] of a) expect(b.get(name)?.data).toEqual(w.data);
    expect(a.has("lm_head.weight")).toBe(false);
    // and map back to the names save_pretrained wrote
    const file = get("gpt2").dtypes;
    expect([...gpt2WeightsToHf(a).keys()].sort()).toEqual([...file.keys()].sort());
  });
});
