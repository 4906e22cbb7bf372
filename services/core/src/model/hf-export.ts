/**
 * A checkpoint written out as a model directory others can load. Hugging Face kinds become what
 * `AutoModelForCausalLM.from_pretrained` reads: the source directory's config.json, a
 * model.safetensors with the source's tensor names, shapes and dtypes (bf16 and fp16 rounded to
 * nearest even), and its tokenizer files. The project's own kinds become their safetensors plus a
 * config.json that says what they are (no library outside this project builds them). A LoRA
 * run's checkpoint exports the tuned model (its adapters merged, W += alpha/r · B A) and, beside
 * it, the adapters as PEFT's `adapter_config.json` + `adapter_model.safetensors`.
 */
import { copyFile, mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { CheckpointError } from "../errors.js";
import type { DecodedCheckpoint } from "./checkpoint.js";
import { hfGpt2Name } from "./hf-parameters.js";
import { mergedCheckpoint } from "./lora-checkpoint.js";
import { writePeftAdapter } from "./lora-files.js";
import type { FloatDtype } from "./safetensors.js";
import { type TensorOut, writeSafetensors } from "./safetensors-write.js";

/** Files of a model directory besides its weights that an export carries over. */
const COPIED =
  /^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens)\.json$|^(vocab\.json|merges\.txt|tokenizer\.model)$/;

/** The file name of GPT-2 parameter `param` as the source directory spelt it (either naming). */
function gpt2FileName(param: string, dtypes: Record<string, FloatDtype>): string {
  const saved = hfGpt2Name(param);
  const hub = saved.slice("transformer.".length);
  return saved in dtypes || !(hub in dtypes) ? saved : hub;
}

/** What an export wrote, for the command's report. */
export interface ExportResult {
  files: string[];
  dtypes: FloatDtype[];
}

/**
 * Writes checkpoint `c` as a model directory `out` (created; files there are overwritten).
 * CheckpointError when a Hugging Face checkpoint does not say where it came from.
 */
export async function exportCheckpoint(c: DecodedCheckpoint, out: string): Promise<ExportResult> {
  const merged = mergedCheckpoint(c);
  if (merged === null) return exportWeights(c, out);
  try {
    const r = await exportWeights(merged.checkpoint, out);
    await writePeftAdapter(out, merged.adapters);
    return { ...r, files: [...r.files, "adapter_config.json", "adapter_model.safetensors"].sort() };
  } finally {
    merged.dispose();
  }
}

/** The model directory of checkpoint `c`'s parameters. */
async function exportWeights(c: DecodedCheckpoint, out: string): Promise<ExportResult> {
  await mkdir(out, { recursive: true });
  const tensors = new Map<string, TensorOut>();
  if (c.kind !== "hf-gpt2" && c.kind !== "hf-llama") {
    for (const [name, w] of c.weights) tensors.set(name, { ...w, dtype: "F32" });
    await writeSafetensors(path.join(out, "model.safetensors"), tensors);
    const config = { rlaif_kind: c.kind, rlaif_config: c.config, rlaif_tokenizer: c.tokenizer };
    await writeFile(path.join(out, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
    return { files: ["config.json", "model.safetensors"], dtypes: ["F32"] };
  }
  const origin = c.origin;
  if (origin === undefined)
    throw new CheckpointError(
      `this ${c.kind} checkpoint does not name its source directory (metadata 'origin')`,
    );
  for (const [param, w] of c.weights) {
    const name = c.kind === "hf-gpt2" ? gpt2FileName(param, origin.dtypes) : param;
    tensors.set(name, { ...w, dtype: origin.dtypes[name] ?? "F32" });
  }
  await writeSafetensors(path.join(out, "model.safetensors"), tensors);
  let sourceFiles: string[];
  try {
    sourceFiles = (await readdir(origin.dir)).filter((f) => COPIED.test(f));
  } catch (cause) {
    throw new CheckpointError(`cannot read the source directory ${origin.dir}: ${(cause as Error).message}`, {
      cause,
    });
  }
  for (const f of sourceFiles) await copyFile(path.join(origin.dir, f), path.join(out, f));
  return {
    files: [...sourceFiles, "model.safetensors"].sort(),
    dtypes: [...new Set([...tensors.values()].map((t) => t.dtype))],
  };
}
