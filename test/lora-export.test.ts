/**
 * `rlaif export` of a LoRA checkpoint of a Hugging Face model: the merged model.safetensors gives,
 * under the independent PyTorch implementation (test/python/hf_reference.py), the logits of our
 * model with its adapters on; and PEFT's adapter files, applied to the source weights by PEFT's
 * own equations (W += alpha/r · B A, transposed for GPT-2's Conv1D with fan_in_fan_out), give
 * those merged weights.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
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
import { LORA_TENSOR_PREFIX, prefixTensors } from "../services/core/src/model/checkpoint-names.js";
import { exportCheckpoint } from "../services/core/src/model/hf-export.js";
import { attachLora, type LoraSpec } from "../services/core/src/model/lora.js";
import { loraSpecMetadata } from "../services/core/src/model/lora-checkpoint.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";

const FIXTURES = path.join(import.meta.dirname, "fixtures", "hf");
const PY = path.join(import.meta.dirname, "python");
const hasTorch = requireTool(TOOLS.pythonTorch);
const TOKENS = [
  [0, 5, 17, 33, 2, 40, 9, 11],
  [3, 8, 1, 60, 22, 14, 7, 30],
];
const SPEC: LoraSpec = { rank: 2, alpha: 6, dropout: 0.1, targets: [] };

/** PEFT's merge from the files alone: max |source W + ΔW − exported W| over the adapted layers. */
const PEFT_MERGE = `
import glob, json, os, sys
sys.path.insert(0, sys.argv[1])
from hf_reference import read_tensors
src, out = sys.argv[2], sys.argv[3]
base = {}
for f in glob.glob(os.path.join(src, "model*.safetensors")):
    base.update(read_tensors(f))
merged = read_tensors(os.path.join(out, "model.safetensors"))
ad = read_tensors(os.path.join(out, "adapter_model.safetensors"))
cfg = json.load(open(os.path.join(out, "adapter_config.json")))
scale = cfg["lora_alpha"] / cfg["r"]
worst, n = 0.0, 0
for k in ad:
    if not k.endswith(".lora_A.weight"):
        continue
    module = k[len("base_model.model."):-len(".lora_A.weight")]
    a, b = ad[k], ad[k.replace("lora_A", "lora_B")]
    delta = scale * (b @ a)
    if cfg["fan_in_fan_out"]:
        delta = delta.T
    name = module + ".weight"
    if name not in base:
        name = name[len("transformer."):]
    worst = max(worst, float((base[name] + delta - merged[name]).abs().max()))
    n += 1
print(json.dumps({"worst": worst, "layers": n}))
`;

describe("lora export", () => {
  beforeAll(async () => {
    await initBackend("wasm");
  });

  for (const name of ["gpt2", "llama"]) {
    it(`lora export - ${name}: merged weights give PyTorch our adapted logits; PEFT's files merge to them`, async (ctx) => {
      if (!hasTorch) ctx.skip();
      const dir = mkdtempSync(path.join(tmpdir(), `rlaif-lora-export-${name}-`));
      const model = await loadModel(path.join(FIXTURES, name));
      const lora = attachLora(model, SPEC, 5);
      for (const v of lora.variables()) v.assign(tf.randomNormal(v.shape, 0, 0.2, "float32", 3));
      const file = path.join(dir, "final.safetensors");
      await saveCheckpoint(file, {
        ...checkpointFromModel(model, loraSpecMetadata(SPEC)),
        state: prefixTensors(LORA_TENSOR_PREFIX, lora.getWeights()),
      });
      const out = path.join(dir, "out");
      const r = await exportCheckpoint(await loadCheckpoint(file), out);
      expect(r.files).toEqual(expect.arrayContaining(["adapter_config.json", "adapter_model.safetensors"]));
      const ours = tf.tidy(() =>
        model.forward(tf.tensor2d(TOKENS, undefined, "int32"), undefined, { ops: "inference" }).dataSync(),
      );
      model.dispose();
      const ref = JSON.parse(
        execFileSync(PYTHON, [path.join(PY, "hf_reference.py"), out, JSON.stringify(TOKENS)], {
          encoding: "utf8",
        }),
      ).logits as number[];
      const scale = Math.max(...ref.map(Math.abs));
      const err = Math.max(...ref.map((x, i) => Math.abs(x - (ours[i] as number)))) / scale;
      expect(err, `${name}: PyTorch on the merged export vs our adapted model`).toBeLessThan(1e-5);
      const peft = JSON.parse(
        execFileSync(PYTHON, ["-c", PEFT_MERGE, PY, path.join(FIXTURES, name), out], { encoding: "utf8" }),
      );
      expect(peft.layers).toBe(lora.layers.length);
      expect(peft.worst).toBeLessThan(1e-6);
    }, 60_000);
  }
});
