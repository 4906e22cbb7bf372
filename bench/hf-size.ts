/**
 * Size and speed of the Hugging Face architectures at their real sizes, on this machine's CPU:
 *
 *   npx tsx bench/hf-size.ts [--only gpt2-124m,smollm2-135m,tinyllama-1.1b] [--no-learner] [--lora <rank>] [--json] [--smoke]
 *                            [--sample-rows 4] [--sample-tokens 16] [--learn-rows 4] [--learn-tokens 32]
 *
 * Per architecture (GPT-2 124M, SmolLM2-135M's shape, TinyLlama-1.1B's shape; random weights,
 * since no pretrained weights can be downloaded here): parameters, the time to load a
 * config.json + model.safetensors directory written to a temp dir with the real loader, RSS
 * after load, sampling tokens/s (4 rows × 16 tokens, KV cache) and two learner steps (4 rows ×
 * 32 tokens, full fine-tuning) with RSS. A model that cannot fit the backend is reported with the
 * reason. Models run one after another in this process, smallest first, so an RSS figure
 * includes what the allocator kept from earlier models. `--smoke` runs tiny shapes for CI.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { describeBackend, startBackend } from "../services/core/src/model/backend.js";
import { measureArchitecture, type SizeResult } from "./hf-size/measure.js";
import { REAL_ARCHITECTURES, SMOKE_ARCHITECTURES } from "./hf-size/random-dir.js";

function usage(message: string): never {
  process.stderr.write(`bench/hf-size.ts: ${message}\n`);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    only: { type: "string" },
    json: { type: "boolean", default: false },
    smoke: { type: "boolean", default: false },
    "no-learner": { type: "boolean", default: false },
    lora: { type: "string", default: "0" },
    "sample-rows": { type: "string" },
    "sample-tokens": { type: "string" },
    "learn-rows": { type: "string" },
    "learn-tokens": { type: "string" },
  },
});
const all = values.smoke ? SMOKE_ARCHITECTURES : REAL_ARCHITECTURES;
const wanted = values.only?.split(",").map((s) => s.trim()) ?? all.map((a) => a.name);
const unknown = wanted.filter((n) => !all.some((a) => a.name === n));
if (unknown.length > 0)
  usage(`--only: unknown ${unknown.join(", ")} (choose from ${all.map((a) => a.name).join(", ")})`);
/** A shape flag: a whole number in 1..4096, or `fallback` when absent. */
function size(flag: string, fallback: number): number {
  const raw = (values as Record<string, unknown>)[flag];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 4096)
    usage(`--${flag} must be a whole number in 1..4096, got ${String(raw)}`);
  return n;
}
const base = values.smoke
  ? { sampleRows: 2, sampleTokens: 4, learnRows: 2, learnTokens: 8 }
  : { sampleRows: 4, sampleTokens: 16, learnRows: 4, learnTokens: 32 };
const shapes = {
  sampleRows: size("sample-rows", base.sampleRows),
  sampleTokens: size("sample-tokens", base.sampleTokens),
  learnRows: size("learn-rows", base.learnRows),
  learnTokens: size("learn-tokens", base.learnTokens),
  learn: !values["no-learner"],
  loraRank: Number(values.lora),
};
if (!Number.isInteger(shapes.loraRank) || shapes.loraRank < 0)
  usage(`--lora must be a LoRA rank (an integer ≥ 0; 0 = full fine-tuning), got ${values.lora}`);
const note = (line: string) => {
  if (!values.json) process.stderr.write(`${line}\n`);
};

const loadBefore = loadavg()[0] as number;
const backend = await startBackend(defaultConfig().services.backend);
const scratch = await mkdtemp(path.join(tmpdir(), "rlaif-hf-size-"));
const results: SizeResult[] = [];
try {
  for (const arch of all.filter((a) => wanted.includes(a.name))) {
    const r = await measureArchitecture(arch, shapes, backend, scratch, note);
    results.push(r);
    note(JSON.stringify(r));
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}

const cell = (x: number | undefined, digits = 0) => (x === undefined ? "—" : x.toFixed(digits));
if (values.json) {
  const load = { cores: cpus().length, before: loadBefore, after: loadavg()[0] as number };
  process.stdout.write(`${JSON.stringify({ backend: describeBackend(), load, shapes, results })}\n`);
} else {
  const head =
    "| model | params | load s | RSS after load MB | sample tok/s | learner step s (1st, 2nd) | RSS after step MB |";
  const lines = results.map((r) => {
    const steps = r.learnerStepMs?.map((ms) => (ms / 1000).toFixed(1)).join(", ");
    const row = [
      r.name,
      `${(r.params / 1e6).toFixed(1)}M`,
      cell(r.loadMs === undefined ? undefined : r.loadMs / 1000, 1),
      cell(r.rssAfterLoadMb),
      cell(r.samplingTokensPerSecond, 1),
      steps ?? "—",
      cell(r.rssAfterLearnerMb),
    ];
    return `| ${row.join(" | ")} |${r.skipped ? ` ${r.skipped.part} skipped: ${r.skipped.reason}` : ""}`;
  });
  process.stdout.write(
    `backend ${describeBackend()}; learner ${shapes.loraRank > 0 ? `LoRA rank ${shapes.loraRank}` : "full fine-tuning"}; ${cpus().length} cores, load average ${loadBefore.toFixed(1)} → ${(loadavg()[0] as number).toFixed(1)}; sampling ${shapes.sampleRows} × ${shapes.sampleTokens}, learner ${shapes.learnRows} × ${shapes.learnTokens}\n${head}\n|${"---|".repeat(7)}\n${lines.join("\n")}\n`,
  );
}
