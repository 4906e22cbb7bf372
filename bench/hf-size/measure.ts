/**
 * One architecture measured end to end on the running TensorFlow.js backend: write it as a
 * random-weight Hugging Face directory, load it with the real loader (loadHfModel), sample
 * `rows × newTokens` with the KV cache, then two ReinforceLearner steps (full fine-tuning:
 * forward, backward, clip, Adam), with the process RSS after each part. A part that cannot fit
 * the backend (tfjs-wasm's heap is capped at 4 GiB) is reported as skipped with the reason,
 * before anything is allocated, instead of dying inside the allocator.
 */
import { rm } from "node:fs/promises";
import { freemem } from "node:os";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { type Trajectory, TrajectorySchema } from "../../services/core/gen/rlaif/common/v1/types_pb.js";
import { defaultConfig } from "../../services/core/src/config/settings.js";
import { loadHfModel } from "../../services/core/src/model/hf-model-dir.js";
import { generate } from "../../services/core/src/model/sampler.js";
import { ReinforceLearner } from "../../services/optimizer/reinforce-learner.js";
import { type Architecture, parameterCount, writeRandomHfDir } from "./random-dir.js";

/** tfjs-backend-wasm's `getHeapMax()`: the most bytes its WebAssembly memory can grow to. */
export const WASM_HEAP_BYTES = 4294901760;
/** float32 bytes per parameter held while fine-tuning every weight: weights, gradients, Adam's m and v. */
const FULL_FT_BYTES_PER_PARAM = 16;

/** The batch shapes measured. */
export interface Shapes {
  sampleRows: number;
  sampleTokens: number;
  learnRows: number;
  /** Prompt + completion tokens per learner row. */
  learnTokens: number;
  /** Whether to take the learner steps (a 1.1B step on the plain-JS cpu backend takes most of an hour). */
  learn: boolean;
  /** LoRA rank of the learner's adapters; 0 = full fine-tuning. */
  loraRank: number;
}

/** What was measured for one architecture (times in ms, RSS in MB); `skipped` says why a part was not run. */
export interface SizeResult {
  name: string;
  params: number;
  weightsMb: number;
  writeMs?: number;
  loadMs?: number;
  rssAfterLoadMb?: number;
  samplingTokensPerSecond?: number;
  rssAfterSamplingMb?: number;
  /** First step (allocates Adam's moments) and second step. */
  learnerStepMs?: [number, number];
  rssAfterLearnerMb?: number;
  lossFinite?: boolean;
  skipped?: { part: "load" | "learner"; reason: string };
}

const rssMb = () => process.memoryUsage().rss / 2 ** 20;
const mb = (bytes: number) => Math.round(bytes / 2 ** 20);

/** Fixed trajectories of byte-tokenizer ids (the learner places the byte tokenizer's BOS), two groups. */
function trajectories(s: Shapes): Trajectory[] {
  const prompt = Math.floor(s.learnTokens / 4);
  const completion = s.learnTokens - prompt;
  return Array.from({ length: s.learnRows }, (_, r) =>
    create(TrajectorySchema, {
      id: `size.${r}`,
      promptIndex: r % 2,
      sampleIndex: Math.floor(r / 2),
      promptTokens: Array.from({ length: prompt }, (_, i) => 32 + ((r * 7 + i * 13) % 90)),
      completionTokens: Array.from({ length: completion }, (_, i) => 32 + ((r * 11 + i * 17) % 90)),
      behaviourLogprobs: Array.from({ length: completion }, () => -10.8),
      referenceLogprobs: Array.from({ length: completion }, () => -10.8),
      reward: r % 2 === 0 ? 1 : -1,
    }),
  );
}

/**
 * Why `bytes` of float32 cannot be held by `backend`, or null when they fit: wasm's heap cap, or
 * (any backend) the memory this machine has free now, since an out-of-memory kill says nothing.
 */
function wontFit(backend: string, bytes: number, what: string): string | null {
  if (backend.startsWith("wasm") && bytes > WASM_HEAP_BYTES)
    return `${what} need ${mb(bytes)} MiB of float32, more than tfjs-wasm's ${mb(WASM_HEAP_BYTES)} MiB heap cap`;
  if (bytes > freemem())
    return `${what} need ${mb(bytes)} MiB of float32, this machine has ${mb(freemem())} MiB free`;
  return null;
}

/** Measures `arch` in `scratch` (its directory is removed afterwards); `note` reports progress. */
export async function measureArchitecture(
  arch: Architecture,
  shapes: Shapes,
  backend: string,
  scratch: string,
  note: (line: string) => void,
): Promise<SizeResult> {
  const params = parameterCount(arch);
  const result: SizeResult = { name: arch.name, params, weightsMb: mb(params * 4) };
  const noLoad = wontFit(backend, params * 4, "the weights alone");
  if (noLoad !== null) return { ...result, skipped: { part: "load", reason: noLoad } };
  const dir = path.join(scratch, arch.name);
  try {
    note(`${arch.name}: writing ${result.weightsMb} MiB of random weights …`);
    let t = performance.now();
    await writeRandomHfDir(arch, dir);
    result.writeMs = performance.now() - t;
    note(`${arch.name}: loading …`);
    t = performance.now();
    const { model } = await loadHfModel(dir);
    result.loadMs = performance.now() - t;
    result.rssAfterLoadMb = rssMb();
    note(
      `${arch.name}: loaded in ${(result.loadMs / 1000).toFixed(1)} s, RSS ${result.rssAfterLoadMb.toFixed(0)} MB`,
    );
    let owned = true;
    try {
      note(`${arch.name}: sampling ${shapes.sampleRows} × ${shapes.sampleTokens} …`);
      const prompts = Array.from({ length: shapes.sampleRows }, (_, r) => [72 + r, 101, 108, 108, 111]);
      const p = { maxNewTokens: shapes.sampleTokens, temperature: 1, topK: 0, topP: 1, seed: 1 };
      t = performance.now();
      const rows = await generate(model, prompts, { ...p, stopAtEos: false });
      const tokens = rows.reduce((n, r) => n + r.tokens.length, 0);
      result.samplingTokensPerSecond = tokens / ((performance.now() - t) / 1000);
      result.rssAfterSamplingMb = rssMb();
      note(
        `${arch.name}: ${result.samplingTokensPerSecond.toFixed(2)} tokens/s, RSS ${result.rssAfterSamplingMb.toFixed(0)} MB`,
      );
      if (!shapes.learn)
        return {
          ...result,
          skipped: { part: "learner", reason: "--no-learner: learner steps not asked for" },
        };
      const noLearn = wontFit(
        backend,
        params * (shapes.loraRank > 0 ? 4 : FULL_FT_BYTES_PER_PARAM),
        "weights, gradients and Adam moments",
      );
      if (noLearn !== null) return { ...result, skipped: { part: "learner", reason: noLearn } };
      note(`${arch.name}: learner steps ${shapes.learnRows} × ${shapes.learnTokens} …`);
      const learner = new ReinforceLearner(model, {
        ...defaultConfig().run,
        learningRate: 1e-5,
        loraRank: shapes.loraRank,
      });
      owned = false; // the learner disposes the model
      try {
        const batch = trajectories(shapes);
        const steps: number[] = [];
        let finite = true;
        for (let i = 0; i < 2; i++) {
          t = performance.now();
          const r = await learner.step(batch);
          steps.push(performance.now() - t);
          finite &&= Number.isFinite(r.loss);
        }
        result.learnerStepMs = [steps[0] as number, steps[1] as number];
        result.rssAfterLearnerMb = rssMb();
        result.lossFinite = finite;
      } finally {
        learner.dispose();
      }
    } finally {
      if (owned) model.dispose();
    }
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
