/**
 * LoRA adapters out of the process: adapter-only weight blobs (what a LoRA run publishes: the
 * adapters and the SHA-256 of the base they apply to, a few hundred KB instead of the whole
 * model), PEFT's adapter directory (`adapter_config.json` + `adapter_model.safetensors`, which
 * `PeftModel.from_pretrained` loads) and merged weights (W += alpha/r · B A, for an export that
 * needs no PEFT).
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { CheckpointError, WeightsError } from "../errors.js";
import type { CausalLM, WeightMap } from "./causal-lm.js";
import { adapterNames, type LinearLayer, type LoraAdapters, type LoraSpec } from "./lora.js";
import { decodeSafetensors, encodeSafetensors } from "./safetensors-bytes.js";

/** `__metadata__.format` of an adapter-only blob. */
export const ADAPTER_FORMAT = "rlaif-lora-v1";

/** What an adapter-only blob holds. */
export interface AdapterBlob {
  /** SHA-256 (hex) of the base weights blob the adapters apply to. */
  baseSha256: string;
  spec: LoraSpec;
  /** Adapter tensors by name (`<layer>.lora_A.weight` [r, in], `.lora_B.weight` [out, r]). */
  weights: WeightMap;
}

/** The blob of `adapters` trained on the base whose weights blob has SHA-256 `baseSha256`. */
export function encodeAdapterBlob(adapters: LoraAdapters, baseSha256: string): Uint8Array {
  return encodeAdapterTensors({ baseSha256, spec: adapters.spec, weights: adapters.getWeights() });
}

/**
 * The blob of saved adapter tensors (a resumed run republishing the adapters its checkpoint
 * holds): the same bytes `encodeAdapterBlob` gives for adapters with these values.
 */
export function encodeAdapterTensors(blob: AdapterBlob): Uint8Array {
  const { rank, alpha, dropout, targets } = blob.spec;
  return encodeSafetensors(blob.weights, {
    format: ADAPTER_FORMAT,
    baseSha256: blob.baseSha256,
    lora: JSON.stringify({ rank, alpha, dropout, targets }),
  });
}

/** Whether weight blob bytes are an adapter-only blob (not a full checkpoint). */
export function isAdapterBlob(bytes: Uint8Array): boolean {
  // The header is JSON right after the 8-byte length; the format key sits in __metadata__.
  const head = new TextDecoder().decode(bytes.subarray(8, Math.min(bytes.length, 8 + 64 * 1024)));
  return head.includes(`"format":"${ADAPTER_FORMAT}"`);
}

/** Parses an adapter-only blob; a defect is a CheckpointError. */
export function decodeAdapterBlob(bytes: Uint8Array): AdapterBlob {
  const { tensors, metadata } = decodeSafetensors(bytes, "adapter blob");
  if (metadata.format !== ADAPTER_FORMAT)
    throw new CheckpointError(`adapter blob: format '${metadata.format}' is not ${ADAPTER_FORMAT}`);
  const base = metadata.baseSha256 ?? "";
  if (!/^[0-9a-f]{64}$/.test(base))
    throw new CheckpointError("adapter blob: baseSha256 is not a SHA-256 in hex");
  let spec: LoraSpec;
  try {
    spec = JSON.parse(metadata.lora ?? "") as LoraSpec;
  } catch (e) {
    throw new CheckpointError("adapter blob: lora metadata is not JSON", { cause: e });
  }
  return { baseSha256: base, spec, weights: tensors };
}

/**
 * Refuses adapters trained on another base: the blob's base SHA-256 must be `heldSha256`, the
 * SHA-256 of the base weights the caller holds (WeightsError naming both).
 */
export function checkAdapterBase(blob: AdapterBlob, heldSha256: string): void {
  if (blob.baseSha256 !== heldSha256)
    throw new WeightsError(
      `adapters apply to base ${blob.baseSha256.slice(0, 12)}…, but the base held is ${heldSha256.slice(0, 12)}…`,
    );
}

/** ΔW = scaling · B A as [out, in] (nn.Linear) or its transpose [in, out] (Conv1D). */
function deltaOf(
  layer: LinearLayer,
  a: Float32Array,
  b: Float32Array,
  r: number,
  scaling: number,
): Float32Array {
  const { inDim, outDim } = layer;
  const d = new Float32Array(inDim * outDim);
  for (let o = 0; o < outDim; o++) {
    for (let k = 0; k < r; k++) {
      const bok = (b[o * r + k] as number) * scaling;
      if (bok === 0) continue;
      for (let i = 0; i < inDim; i++) {
        const v = bok * (a[k * inDim + i] as number);
        if (layer.layout === "out-in") d[o * inDim + i] += v;
        else d[i * outDim + o] += v;
      }
    }
  }
  return d;
}

/**
 * The model's weights with the adapters merged in, W ← W + alpha/r · B A (transposed onto
 * GPT-2's [in, out] layout), under the model's own names: a plain checkpoint or Hugging Face
 * export of the tuned model.
 */
export function mergedWeights(model: CausalLM, adapters: LoraAdapters): WeightMap {
  const weights = model.getWeights();
  const lora = adapters.getWeights();
  for (const layer of adapters.layers) {
    const names = adapterNames(layer);
    const w = weights.get(layer.weight);
    if (w === undefined) throw new WeightsError(`the model has no layer '${layer.weight}'`);
    const a = (lora.get(names.a) as { data: Float32Array }).data;
    const b = (lora.get(names.b) as { data: Float32Array }).data;
    const d = deltaOf(layer, a, b, adapters.spec.rank, adapters.scaling);
    const data = Float32Array.from(w.data);
    for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) + (d[i] as number);
    weights.set(layer.weight, { shape: w.shape, data });
  }
  return weights;
}

/** PEFT's `target_modules`: the run's targets, or the last name of every adapted module. */
function targetModules(adapters: LoraAdapters): string[] {
  if (adapters.spec.targets.length > 0) return [...adapters.spec.targets];
  return [...new Set(adapters.layers.map((l) => l.module.slice(l.module.lastIndexOf(".") + 1)))];
}

/**
 * PEFT's adapter files: `adapter_config.json` (peft_type LORA, r, lora_alpha, target_modules,
 * fan_in_fan_out for GPT-2's Conv1D) and `adapter_model.safetensors` with PEFT's key names,
 * `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r].
 */
export function peftAdapterFiles(adapters: LoraAdapters): { config: string; safetensors: Uint8Array } {
  const lora = adapters.getWeights();
  const tensors: WeightMap = new Map();
  for (const layer of adapters.layers) {
    const names = adapterNames(layer);
    tensors.set(
      `base_model.model.${layer.module}.lora_A.weight`,
      lora.get(names.a) as { shape: number[]; data: Float32Array },
    );
    tensors.set(
      `base_model.model.${layer.module}.lora_B.weight`,
      lora.get(names.b) as { shape: number[]; data: Float32Array },
    );
  }
  const config = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    r: adapters.spec.rank,
    lora_alpha: adapters.spec.alpha,
    lora_dropout: adapters.spec.dropout,
    target_modules: targetModules(adapters),
    fan_in_fan_out: adapters.layers.some((l) => l.layout === "in-out"),
    bias: "none",
    base_model_name_or_path: null,
    inference_mode: true,
  };
  return {
    config: `${JSON.stringify(config, null, 2)}\n`,
    safetensors: encodeSafetensors(tensors, { format: "pt" }),
  };
}

/** Writes PEFT's adapter directory (see `peftAdapterFiles`) to `dir`, creating it. */
export async function writePeftAdapter(dir: string, adapters: LoraAdapters): Promise<void> {
  const files = peftAdapterFiles(adapters);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "adapter_config.json"), files.config);
  await writeFile(path.join(dir, "adapter_model.safetensors"), files.safetensors);
}
