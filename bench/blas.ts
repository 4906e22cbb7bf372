/**
 * What the OpenBLAS matmul kernels buy on the wasm backend, measured in one process so both
 * sides see the same machine load: the wasm backend's own matmul kernels and the OpenBLAS ones
 * are switched per round (`setWasmMatMul`), rounds alternate, and medians are printed.
 *
 *   npx tsx bench/blas.ts [--checkpoint file] [--rounds 5] [--threads 1,2] [--profile] [--json]
 *                         [--baseline other/rlaif_blas.node]
 *
 * Measured per variant (`wasm`, then `blas` at each OpenBLAS thread count):
 * - one learner step (forward, backward, clip, Adam) of the checkpoint's model on the batch a run
 *   trains on by default: 8 prompts × 8 samples, 20 prompt + 24 completion tokens (64 × 45 with BOS);
 * - sampling 64 rows × 24 tokens with the KV cache (tokens/s);
 * - reference log-probs, one 64 × 45 forward.
 * With `--baseline`, another build of the addon (e.g. one built from an older commit) runs as
 * variants `base nT` in the same rounds, so a kernel change is measured against the kernels it
 * replaces under the same machine load (kernels the older build lacks fall back to tfjs's).
 * With `--profile`, per-kernel time and call counts of one learner step on the first BLAS variant
 * (tf.profile), to show what to fuse next; `--shapes` groups it by kernel and input shapes too
 * (which products run below peak). Needs the addon (`npm run build:native`).
 */
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import * as tf from "@tensorflow/tfjs";
import { TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { DEFAULT_CHECKPOINT, defaultConfig } from "../services/core/src/config/settings.js";
import { describeBackend, initBackend } from "../services/core/src/model/backend.js";
import type { CausalLM } from "../services/core/src/model/causal-lm.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { generate, sequenceLogprobs } from "../services/core/src/model/sampler.js";
import { setWasmMatMul } from "../services/core/src/model/wasm-kernels.js";
import { ReinforceLearner } from "../services/optimizer/reinforce-learner.js";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string", default: DEFAULT_CHECKPOINT },
    rounds: { type: "string", default: "5" },
    threads: { type: "string", default: "1,2" },
    profile: { type: "boolean", default: false },
    shapes: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    baseline: { type: "string" },
  },
});
const PROMPTS = 8;
const SAMPLES = 8;
const PROMPT_TOKENS = 20;
const NEW_TOKENS = 24;

await initBackend("wasm");
const blas = loadBlas().addon;
if (blas === null) throw new Error(`bench/blas.ts needs the BLAS addon: ${describeBackend()}`);
const started = describeBackend();
// loaded after the project's addon, so OPENBLAS_CORETYPE is already set for the shared OpenBLAS
const baseline =
  values.baseline === undefined
    ? null
    : (createRequire(import.meta.url)(resolve(values.baseline)) as BlasAddon);
const loaded = await loadModel(values.checkpoint);

/** Deterministic byte tokens (the learner's cost does not depend on their values). */
const tokens = (n: number, salt: number): number[] =>
  Array.from({ length: n }, (_, i) => 32 + ((i * 7 + salt * 13) % 90));
const trajectories = Array.from({ length: PROMPTS * SAMPLES }, (_, r) =>
  create(TrajectorySchema, {
    id: `b${r}`,
    promptIndex: Math.floor(r / SAMPLES),
    sampleIndex: r % SAMPLES,
    promptTokens: tokens(PROMPT_TOKENS, Math.floor(r / SAMPLES)),
    completionTokens: tokens(NEW_TOKENS, r + 100),
    behaviourLogprobs: Array(NEW_TOKENS).fill(-4),
    referenceLogprobs: Array(NEW_TOKENS).fill(-4.1),
    reward: (r % 3) - 1,
  }),
);
const prompts = trajectories.map((t) => t.promptTokens);
const completions = trajectories.map((t) => t.completionTokens);
const sampling = { maxNewTokens: NEW_TOKENS, temperature: 1, topK: 0, topP: 1, seed: 5, stopAtEos: false };

interface Variant {
  name: string;
  use(): void;
}
const variants: Variant[] = [
  { name: "wasm", use: () => setWasmMatMul("wasm") },
  ...values.threads.split(",").map((t) => ({
    name: `blas ${t}T`,
    use: () => {
      setWasmMatMul("blas", blas);
      blas.setThreads(Number(t));
    },
  })),
  ...(baseline === null ? [] : values.threads.split(",")).map((t) => ({
    name: `base ${t}T`,
    use: () => {
      setWasmMatMul("blas", baseline);
      (baseline as BlasAddon).setThreads(Number(t));
    },
  })),
];

/** Wall milliseconds of `f`, and the process's CPU time over that wall time into `cpu`. */
const time = async (f: () => unknown, cpu: number[]): Promise<number> => {
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wall = performance.now() - t0;
  const u = process.cpuUsage(u0);
  cpu.push((u.user + u.system) / 1000 / wall);
  return wall;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const learner = new ReinforceLearner(loaded, { ...defaultConfig().run });
const policy: CausalLM = await loadModel(values.checkpoint);
const results = new Map(
  variants.map((v) => [
    v.name,
    { step: [] as number[], cpu: [] as number[], sample: [] as number[], logprobs: [] as number[] },
  ]),
);
for (const v of variants) {
  v.use(); // warm-up: first calls compile and allocate
  await learner.step(trajectories);
  await generate(policy, prompts.slice(0, 8), { ...sampling, maxNewTokens: 2 });
}
for (let round = 0; round < Number(values.rounds); round++) {
  for (const v of variants) {
    v.use();
    const r = results.get(v.name);
    if (r === undefined) continue;
    r.step.push(await time(() => learner.step(trajectories), r.cpu));
    r.sample.push(await time(() => generate(policy, prompts, sampling), []));
    r.logprobs.push(await time(() => sequenceLogprobs(policy, prompts, completions), []));
  }
}
const rows = variants.map((v) => {
  const r = results.get(v.name) as { step: number[]; cpu: number[]; sample: number[]; logprobs: number[] };
  return {
    variant: v.name,
    learnerStepMs: Math.round(median(r.step)),
    stepCpuPerWall: Number(median(r.cpu).toFixed(2)),
    sampleTokensPerS: Math.round((PROMPTS * SAMPLES * NEW_TOKENS) / (median(r.sample) / 1000)),
    logprobsMs: Math.round(median(r.logprobs)),
  };
});

let profile: { kernel: string; ms: number; calls: number }[] = [];
if (values.profile) {
  (variants[1] as Variant).use();
  const info = await tf.profile(async () => {
    await learner.step(trajectories);
  });
  const byKernel = new Map<string, { ms: number; calls: number }>();
  for (const k of info.kernels) {
    // customGrad wrappers (tf.fused.matMul's is "fusedMatMul__op"): their time is their inner
    // kernels', which are listed too.
    if (k.name === "unnamed scope" || k.name.endsWith("__op")) continue;
    const key = values.shapes ? `${k.name} ${k.inputShapes.map((s) => `[${s}]`).join(" ")}` : k.name;
    const e = byKernel.get(key) ?? { ms: 0, calls: 0 };
    e.ms += typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    e.calls += 1;
    byKernel.set(key, e);
  }
  const round = (ms: number) => Math.round(ms * 10) / 10;
  profile = [...byKernel].map(([kernel, e]) => ({ kernel, ms: round(e.ms), calls: e.calls }));
  profile.sort((a, b) => b.ms - a.ms);
}
learner.dispose();
policy.dispose();

if (values.json) {
  console.log(JSON.stringify({ backend: started, rows, profile }));
} else {
  console.log(
    `backend ${started}; ${loaded.kind}, batch ${PROMPTS * SAMPLES} × ${PROMPT_TOKENS + NEW_TOKENS + 1}`,
  );
  console.table(rows);
  if (profile.length > 0) {
    const total = profile.reduce((s, p) => s + p.ms, 0);
    console.log(
      `learner step kernels (${variants[1]?.name}): ${total} ms in ${profile.reduce((s, p) => s + p.calls, 0)} calls`,
    );
    console.table(profile.slice(0, values.shapes ? 40 : 15));
  }
}
