/**
 * The speed benchmark: rlaif against PyTorch on the same models, weights and batch, measured in
 * one run with the sides alternated, printed as ratios rlaif/PyTorch:
 *
 *   npx tsx bench/speed.ts [--kinds transformer,gru,lstm,seq2seq] [--repeats 5] [--warmup 2]
 *                          [--train-steps 8] [--json] [--smoke]
 *
 * Per policy kind (the shipped checkpoints): the learner step (ReinforceLearner.step on the
 * Trajectory messages of a run's first step: P × G rows, forward + backward + clip + Adam), sampling
 * P × G rows × maxNewTokens with the KV cache or recurrent state, and the reference log-probs (one
 * scoring forward), each next to a PyTorch twin (bench/python/speed_reference.py) on 1 and 2
 * threads, with the numeric cross-check that both computed the same thing. Then the Transformer
 * step's effective GFLOP/s against this machine's sgemm peak (measured in the run), RSS after a
 * learner step on both sides, and `rlaif train` embedded: steps/s, cpu/wall, RSS per step.
 * `--smoke` shrinks everything (2 rows, 4 tokens, 1 round, a 2-step run of 2 rows) for CI.
 */
import { cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { defaultConfig, REPO_ROOT } from "../services/core/src/config/settings.js";
import { describeBackend, startBackend } from "../services/core/src/model/backend.js";
import { type ModelKind, OWN_MODEL_KINDS } from "../services/core/src/model/causal-lm.js";
import { loadCheckpoint } from "../services/core/src/model/checkpoint.js";
import type { TransformerConfig } from "../services/core/src/model/transformer-config.js";
import { buildFigures, type Results } from "./speed/figures.js";
import { transformerStepFlops } from "./speed/flops.js";
import { benchKind } from "./speed/kind-bench.js";
import { measureMatmul } from "./speed/matmul-peak.js";
import { formatTable } from "./speed/table.js";
import { TorchWorker } from "./speed/torch-worker.js";
import { benchTrain, type TrainFlags } from "./speed/train-bench.js";

/** PyTorch thread counts measured (torch.set_num_threads and openblas_set_num_threads alike). */
const THREADS = [1, 2] as const;

function usage(message: string): never {
  process.stderr.write(`bench/speed.ts: ${message}\n`);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    kinds: { type: "string", default: OWN_MODEL_KINDS.join(",") },
    repeats: { type: "string" },
    warmup: { type: "string" },
    "train-steps": { type: "string" },
    json: { type: "boolean", default: false },
    smoke: { type: "boolean", default: false },
  },
});
const smoke = values.smoke;
const count = (flag: string, raw: string | undefined, fallback: number, min: number): number => {
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < min) usage(`--${flag} must be an integer ≥ ${min}, got ${raw}`);
  return n;
};
const kinds = (values.kinds as string).split(",").map((k) => k.trim()) as ModelKind[];
const unknown = kinds.filter((k) => !(OWN_MODEL_KINDS as readonly ModelKind[]).includes(k));
if (unknown.length > 0)
  usage(`--kinds: unknown ${unknown.join(", ")} (choose from ${OWN_MODEL_KINDS.join(", ")})`);
const rounds = {
  warmup: count("warmup", values.warmup, smoke ? 1 : 2, 0),
  repeats: count("repeats", values.repeats, smoke ? 1 : 5, 1),
  settleMs: smoke ? 0 : 150,
};
// The learner cross-check compares rlaif's first two steps with a fresh PyTorch learner's.
if (rounds.warmup + rounds.repeats < 2) usage("--warmup + --repeats must be at least 2");
const trainSteps = count("train-steps", values["train-steps"], smoke ? 2 : 8, 0);
const defaults = defaultConfig();
const small = { promptsPerStep: 1, samplesPerPrompt: 2, maxNewTokens: 4 };
const settings = { ...defaults.run, ...(smoke ? small : {}) };
const trainFlags: TrainFlags = smoke
  ? {
      "prompts-per-step": small.promptsPerStep,
      "samples-per-prompt": small.samplesPerPrompt,
      "max-new-tokens": small.maxNewTokens,
    }
  : {};

// the project's own kinds, byte-level (the default policy is a GPT-2 with its own BPE: see trainByte)
const checkpointOf = (kind: ModelKind) => `${REPO_ROOT}checkpoints/${kind}/model.safetensors`;
const note = (line: string) => {
  if (!values.json) process.stderr.write(`${line}\n`);
};

const loadBefore = loadavg()[0] as number;
const backend = await startBackend(defaults.services.backend);
const backendDetail = describeBackend();
const { worker: torch, info } = await TorchWorker.start(Math.max(...THREADS)).catch((e: Error) => {
  process.stderr.write(`bench/speed.ts: ${e.message}\n`);
  process.exit(1);
});
const rows = settings.promptsPerStep * settings.samplesPerPrompt;
const results: Results = { rows, maxNewTokens: settings.maxNewTokens, kinds: {}, peak: { n: 0, gflops: {} } };
try {
  const n = smoke ? 256 : 2048;
  note(`sgemm ${n}³ …`);
  results.peak = {
    n,
    // a peak is a best round, so more rounds (each ~0.1 s) make it surer
    gflops: await measureMatmul(
      torch,
      THREADS,
      [n, n, n],
      { ...rounds, repeats: 2 * rounds.repeats },
      {
        rlaif: false,
        reduce: "best",
      },
    ),
  };
  for (const kind of kinds) {
    note(`${kind} …`);
    results.kinds[kind] = await benchKind({
      kind,
      checkpoint: checkpointOf(kind),
      settings,
      torch,
      threads: THREADS,
      rounds,
    });
  }
  const gpt = results.kinds.transformer;
  if (gpt) {
    const config = (await loadCheckpoint(checkpointOf("transformer"))).config as TransformerConfig;
    const { rows: b, positions } = gpt.batch;
    results.flops = { gflopPerStep: transformerStepFlops(config, b, positions) / 1e9, positions };
    const shape = [b * positions, config.dModel, 4 * config.dModel] as const;
    note(`matmul ${shape.join("×")} …`);
    results.modelMatmul = {
      shape,
      gflops: await measureMatmul(torch, THREADS, shape, rounds, { rlaif: true, reduce: "median" }),
    };
  }
} finally {
  await torch.close();
}
if (trainSteps > 0) {
  note(`rlaif train, ${trainSteps} steps …`);
  results.train = await benchTrain(trainSteps, trainFlags);
  note(`rlaif train on the byte-level Transformer, ${trainSteps} steps …`);
  results.trainByte = await benchTrain(trainSteps, {
    ...trainFlags,
    checkpoint: checkpointOf("transformer"),
  });
}

const figures = buildFigures(results);
const warnings: string[] = [];
const [peak1, peak2] = [results.peak.gflops.torch1 ?? 0, results.peak.gflops.torch2 ?? 0];
if (peak2 < peak1)
  warnings.push(
    `the 2-thread sgemm peak (${peak2.toFixed(0)} GFLOP/s) came out below the 1-thread one (${peak1.toFixed(0)}): the second core was busy with other work, so 2-thread figures and shares of that peak understate this machine`,
  );
const machine = {
  cpus: cpus().length,
  cpu: cpus()[0]?.model ?? "unknown",
  loadAverage: { before: loadBefore, after: loadavg()[0] as number },
};
if (values.json) {
  const report = {
    backend,
    backendDetail,
    node: process.version,
    torch: info,
    machine,
    smoke,
    rounds,
    settings: { rows, ...settings },
    warnings,
  };
  process.stdout.write(`${JSON.stringify({ ...report, figures, results })}\n`);
} else {
  const header = [
    `rlaif (tfjs backend ${backendDetail}, Node ${process.version}) vs PyTorch ${info.torch} (${info.openblas ?? "no OpenBLAS: reference BLAS"})`,
    `same weights and batch: ${settings.promptsPerStep} prompts × ${settings.samplesPerPrompt} samples = ${rows} rows, ${settings.maxNewTokens} new tokens; ` +
      `sides alternated, median of ${rounds.repeats} after ${rounds.warmup} warm-up round(s)`,
    `PyTorch n threads = torch.set_num_threads(n) and openblas_set_num_threads(n), OMP_WAIT_POLICY=${info.ompWaitPolicy}; machine: ${machine.cpus} × ${machine.cpu}, ` +
      `load average ${machine.loadAverage.before.toFixed(1)} → ${machine.loadAverage.after.toFixed(1)}`,
  ];
  process.stdout.write(formatTable(figures, THREADS, [...header, ...warnings.map((w) => `WARNING: ${w}`)]));
}
