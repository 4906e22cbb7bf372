/**
 * The figures of one policy kind, rlaif against PyTorch on the same weights and the same batch:
 * the learner step (ReinforceLearner.step on Trajectory messages: forward, backward, clip, Adam),
 * sampling P × G rows with the KV cache or recurrent state, and the reference log-probs (one
 * scoring forward), each timed with the sides alternated (alternate.ts), plus the RSS after each
 * learner step and the numeric cross-check that both sides did the same work (compare.ts).
 */
import type { RunSettings } from "../../services/core/src/config/settings.js";
import { buildPgBatch, disposePgBatch } from "../../services/core/src/learn/reinforce.js";
import type { CausalLM, ModelKind } from "../../services/core/src/model/causal-lm.js";
import { loadCheckpoint, modelFromCheckpoint } from "../../services/core/src/model/checkpoint.js";
import { loadBlas } from "../../services/core/src/model/native-blas.js";
import { generate, sequenceLogprobs } from "../../services/core/src/model/sampler.js";
import { tokenizerOf } from "../../services/core/src/model/tokenizer.js";
import { ReinforceLearner } from "../../services/optimizer/reinforce-learner.js";
import { alternate, medians, type Rounds, type Timed } from "./alternate.js";
import { maxAbsDiff, relative, relativeToScale } from "./compare.js";
import { readFloat32, tempFile } from "./temp-files.js";
import type { TorchWorker } from "./torch-worker.js";
import { buildWorkload, plainTrajectory, type Workload } from "./workload.js";

/**
 * Per side: `rlaif` (one OpenBLAS thread, as every embedded service runs), `rlaif2` (the learner
 * step on two OpenBLAS threads, as an Optimizer with a node of its own runs it), then PyTorch at
 * each thread count (`torch1`, `torch2`).
 */
export type BySide = Record<string, number>;

/** The rlaif side that runs on `threads` OpenBLAS threads (`rlaif` is one thread). */
export const rlaifSideName = (threads: number): string => (threads === 1 ? "rlaif" : `rlaif${threads}`);

/** How rlaif and PyTorch differ on the same inputs (relative figures, and log-probs in nats). */
export interface KindCheck {
  /** Logits of the learner's batch, max |Δ| / max |logit|. */
  logits: number;
  /** Loss, gradient norm and entropy of the first learner step (initial weights). */
  loss: number;
  gradNorm: number;
  entropy: number;
  /** Loss of the second step, i.e. after one clipped Adam update on both sides. */
  lossAfterUpdate: number;
  /** Reference log-probs of the batch (nats). */
  logprobs: number;
  /** Log-probs of rlaif's sampled tokens under PyTorch's incremental decoder (nats). */
  sampling: number;
}

/** Everything measured for one kind. */
export interface KindResult {
  checkpoint: string;
  params: number;
  /** Rows × input positions of the learner's batch, and its completion tokens (the loss's N). */
  batch: { rows: number; positions: number; completionTokens: number };
  learnerMs: BySide;
  samplingTokensPerSecond: BySide;
  logprobsMs: BySide;
  /** Largest RSS seen right after a learner step, per process (one PyTorch process serves every thread count). */
  rssMb: { rlaif: number; torch: number };
  check: KindCheck;
  /** Every kept time (ms), per figure and side, for anyone who wants more than the median. */
  times: Record<"learner" | "sampling" | "logprobs", Record<string, number[]>>;
}

/** What one kind's measurement needs. */
export interface KindBenchOptions {
  kind: ModelKind;
  checkpoint: string;
  settings: RunSettings;
  torch: TorchWorker;
  threads: readonly number[];
  rounds: Rounds;
}

const sideName = (n: number) => `torch${n}`;

/** The torch sides of one figure: one call per thread count, returning the worker's own time. */
function torchSides(o: KindBenchOptions, op: string, args: Record<string, unknown>, seen?: number[]) {
  return Object.fromEntries(
    o.threads.map((n) => [
      sideName(n),
      async () => {
        const r = await o.torch.call<{ ms: number; rssMb?: number }>(op, {
          kind: o.kind,
          threads: n,
          ...args,
        });
        if (r.rssMb !== undefined) seen?.push(r.rssMb);
        return r.ms;
      },
    ]),
  ) as Record<string, Timed>;
}

/** Times `work` on the rlaif side. */
function rlaifSide(work: () => Promise<unknown> | unknown): Timed {
  return async () => {
    const start = performance.now();
    await work();
    return performance.now() - start;
  };
}

/** Measures one kind; frees its models on both sides before returning. */
export async function benchKind(o: KindBenchOptions): Promise<KindResult> {
  const { kind, checkpoint, settings, torch } = o;
  const model = modelFromCheckpoint(await loadCheckpoint(checkpoint));
  const learner = await ReinforceLearner.fromCheckpoint(checkpoint, settings);
  try {
    const { params } = await torch.call<{ params: number }>("load", { kind, path: checkpoint });
    const work = await buildWorkload(model, settings);
    await torch.call("batch", { kind, trajectories: work.trajectories.map(plainTrajectory), settings });
    const logitsCheck = await compareLogits(model, work, o);
    const learnerPart = await timeLearner(learner, work, o);
    const samplingPart = await timeSampling(model, work, o);
    const logprobsPart = await timeLogprobs(model, work, o);
    await torch.call("unload", { kind });
    const rows = work.prompts.length;
    const perSecond = (ms: number) => (rows * settings.maxNewTokens) / (ms / 1000);
    return {
      checkpoint,
      params,
      batch: {
        rows,
        positions: Math.max(
          ...work.trajectories.map((t) => t.promptTokens.length + t.completionTokens.length),
        ),
        completionTokens: work.trajectories.reduce((n, t) => n + t.completionTokens.length, 0),
      },
      learnerMs: medians(learnerPart.times),
      samplingTokensPerSecond: Object.fromEntries(
        Object.entries(medians(samplingPart.times)).map(([k, ms]) => [k, perSecond(ms)]),
      ),
      logprobsMs: medians(logprobsPart.times),
      rssMb: learnerPart.rssMb,
      check: {
        logits: logitsCheck,
        ...learnerPart.check,
        logprobs: logprobsPart.check,
        sampling: samplingPart.check,
      },
      times: { learner: learnerPart.times, sampling: samplingPart.times, logprobs: logprobsPart.times },
    };
  } finally {
    learner.dispose();
    model.dispose();
  }
}

/** rlaif's logits of the learner's batch (train ops, as the learner runs them) against PyTorch's. */
async function compareLogits(model: CausalLM, work: Workload, o: KindBenchOptions): Promise<number> {
  const built = buildPgBatch(
    work.trajectories.map((t) => ({ ...t, refLogprobs: t.referenceLogprobs })),
    {
      bosId: tokenizerOf(model).bos,
      padId: tokenizerOf(model).pad,
      vocabSize: model.config.vocabSize,
      gamma: o.settings.gamma,
      baseline: 0,
    },
  );
  try {
    const logits = model.forward(built.tokens, undefined, { sourceLengths: built.sourceLengths });
    const ours = logits.dataSync();
    logits.dispose();
    const file = tempFile(`logits-${o.kind}.f32`);
    const { shape } = await o.torch.call<{ shape: number[] }>("logits", { kind: o.kind, out: file });
    const [b, t] = built.tokens.shape;
    if (shape[0] !== b || shape[1] !== t)
      throw new Error(`PyTorch laid the batch out as [${shape}], rlaif as [${b}, ${t}]`);
    return relativeToScale(ours, readFloat32(file));
  } finally {
    disposePgBatch(built);
  }
}

/**
 * The learner step on rlaif at each thread count (OpenBLAS's own threads; the elementwise and
 * fused kernels stay on one) and on PyTorch at each. Without the addon only `rlaif` runs.
 */
async function timeLearner(learner: ReinforceLearner, work: Workload, o: KindBenchOptions) {
  const results: Awaited<ReturnType<ReinforceLearner["step"]>>[] = [];
  const rss: number[] = [];
  const torchRss: number[] = [];
  const { addon } = loadBlas();
  const rlaifThreads = addon ? o.threads : [1];
  const threadsBefore = addon?.info().threads ?? 1;
  const times = await alternate(
    {
      ...Object.fromEntries(
        rlaifThreads.map((n) => [
          rlaifSideName(n),
          async () => {
            addon?.setThreads(n);
            try {
              return await rlaifSide(async () => {
                results.push(await learner.step(work.trajectories));
              })();
            } finally {
              addon?.setThreads(threadsBefore);
              rss.push(process.memoryUsage().rss / 2 ** 20);
            }
          },
        ]),
      ),
      ...torchSides(o, "learner_step", { lr: o.settings.learningRate }, torchRss),
    },
    o.rounds,
  );
  // The first two rlaif steps (initial weights, then after one update) against a fresh PyTorch learner.
  const [first, second] = results as [(typeof results)[0], (typeof results)[0]];
  const lrs = [first.learningRate, second.learningRate];
  const { steps } = await o.torch.call<{ steps: { loss: number; gradNorm: number; entropy: number }[] }>(
    "learner_check",
    { kind: o.kind, lrs },
  );
  const [t1, t2] = steps as [(typeof steps)[0], (typeof steps)[0]];
  return {
    times,
    rssMb: { rlaif: Math.max(...rss), torch: Math.max(...torchRss) },
    check: {
      loss: relative(first.loss, t1.loss),
      gradNorm: relative(first.gradNorm, t1.gradNorm),
      entropy: relative(first.entropy, t1.entropy),
      lossAfterUpdate: relative(second.loss, t2.loss),
    },
  };
}

async function timeSampling(model: CausalLM, work: Workload, o: KindBenchOptions) {
  const n = o.settings.maxNewTokens;
  const seed = o.settings.seed;
  // The policy's own distribution and a fixed length, so both sides draw exactly rows × n tokens.
  const params = { maxNewTokens: n, temperature: 1, topK: 0, topP: 1, seed, stopAtEos: false };
  let sampled: Awaited<ReturnType<typeof generate>> = [];
  const times = await alternate(
    {
      rlaif: rlaifSide(async () => {
        sampled = await generate(model, work.prompts, params);
      }),
      ...torchSides(o, "sample", { prompts: work.prompts, maxNewTokens: n, seed }),
    },
    o.rounds,
  );
  const forced = await o.torch.call<{ logprobs: number[][] }>("sample", {
    kind: o.kind,
    threads: 1,
    prompts: work.prompts,
    maxNewTokens: n,
    seed,
    forced: sampled.map((r) => r.tokens),
  });
  return {
    times,
    check: maxAbsDiff(
      sampled.map((r) => r.logprobs),
      forced.logprobs,
    ),
  };
}

async function timeLogprobs(model: CausalLM, work: Workload, o: KindBenchOptions) {
  const completions = work.trajectories.map((t) => [...t.completionTokens]);
  let ours: number[][] = [];
  const times = await alternate(
    {
      rlaif: rlaifSide(() => {
        ours = sequenceLogprobs(model, work.prompts, completions);
      }),
      ...torchSides(o, "logprobs", { prompts: work.prompts, completions }),
    },
    o.rounds,
  );
  const ref = await o.torch.call<{ logprobs: number[][] }>("logprobs", {
    kind: o.kind,
    threads: 1,
    prompts: work.prompts,
    completions,
    values: true,
  });
  return { times, check: maxAbsDiff(ours, ref.logprobs) };
}
