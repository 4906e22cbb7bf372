/**
 * Command-line pre-training, until `rlaif pretrain` wraps `pretrain()`:
 *
 *   npx tsx services/core/src/model/pretrain-main.ts --out checkpoints/default/model.safetensors --steps 1000
 *
 * Options: --steps --batch --lr --seed --backend --context --d-model --layers --heads
 * --eval-every --samples. Logs progress to stdout, writes the checkpoint atomically with the
 * run's numbers in its metadata, then prints a few samples as a sanity check of the text.
 */
import { parseArgs } from "node:util";
import { type BackendName, initBackend } from "./backend.js";
import { checkpointFromModel, saveCheckpoint } from "./checkpoint.js";
import { countParameters, DEFAULT_CONFIG, type TransformerConfig } from "./config.js";
import { heldOutPrompts } from "./corpus.js";
import { type PretrainLog, pretrain } from "./pretrain.js";
import { generate } from "./sampler.js";
import { decode, encode } from "./tokenizer.js";

const { values } = parseArgs({
  options: {
    out: { type: "string" },
    steps: { type: "string", default: "1000" },
    batch: { type: "string", default: "16" },
    lr: { type: "string", default: "0.003" },
    seed: { type: "string", default: "1" },
    backend: { type: "string" },
    context: { type: "string", default: String(DEFAULT_CONFIG.contextLength) },
    "d-model": { type: "string", default: String(DEFAULT_CONFIG.dModel) },
    layers: { type: "string", default: String(DEFAULT_CONFIG.nLayers) },
    heads: { type: "string", default: String(DEFAULT_CONFIG.nHeads) },
    "eval-every": { type: "string", default: "100" },
    samples: { type: "string", default: "6" },
  },
});
if (values.out === undefined) {
  console.error("usage: pretrain-main.ts --out <file.safetensors> [--steps N] [--batch 16] [--lr 0.003] ...");
  process.exit(2);
}

const config: TransformerConfig = {
  vocabSize: DEFAULT_CONFIG.vocabSize,
  contextLength: Number(values.context),
  dModel: Number(values["d-model"]),
  nLayers: Number(values.layers),
  nHeads: Number(values.heads),
};
const steps = Number(values.steps);
const batchSize = Number(values.batch);
const lr = Number(values.lr);
const seed = Number(values.seed);
const backend = await initBackend(values.backend as BackendName | undefined);
console.log(`backend=${backend} config=${JSON.stringify(config)} params=${countParameters(config)}`);
console.log(`steps=${steps} batch=${batchSize}x${config.contextLength} lr=${lr} seed=${seed}`);

const started = performance.now();
let last: PretrainLog | undefined;
let evalLog: PretrainLog | undefined;
let recentMs = 0;
const model = await pretrain({
  config,
  steps,
  batchSize,
  lr,
  seed,
  evalEvery: Number(values["eval-every"]),
  onLog: (e) => {
    last = e;
    recentMs += e.stepMs;
    if (e.heldOutBpb !== undefined) evalLog = e;
    if ((e.step + 1) % 10 === 0 || e.heldOutBpb !== undefined) {
      const held =
        e.heldOutBpb === undefined
          ? ""
          : ` held-out loss ${e.heldOutLoss?.toFixed(4)} bpb ${e.heldOutBpb.toFixed(4)}`;
      const ms = recentMs / (((e.step % 10) + 1) as number);
      console.log(
        `step ${e.step + 1}/${steps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} |g| ${e.gradNorm.toFixed(3)} ${ms.toFixed(0)} ms/step${held}`,
      );
      recentMs = 0;
    }
  },
});
const wallSeconds = (performance.now() - started) / 1000;

await saveCheckpoint(
  values.out,
  checkpointFromModel(model, {
    step: String(steps),
    version: "0",
    backend,
    seed: String(seed),
    batchSize: String(batchSize),
    lr: String(lr),
    finalTrainLoss: String(last?.loss ?? ""),
    heldOutLoss: String(evalLog?.heldOutLoss ?? ""),
    heldOutBpb: String(evalLog?.heldOutBpb ?? ""),
    wallSeconds: wallSeconds.toFixed(1),
    producedBy: "services/core/src/model/pretrain-main.ts",
  }),
);
console.log(
  `wrote ${values.out} after ${wallSeconds.toFixed(1)} s; held-out bpb ${evalLog?.heldOutBpb?.toFixed(4)}`,
);

const n = Number(values.samples);
if (n > 0) {
  const prompts = heldOutPrompts(n, seed);
  const outs = generate(
    model,
    prompts.map((p) => encode(p)),
    { maxNewTokens: config.contextLength, temperature: 0.8, topK: 0, topP: 0.95, seed, stopAtEos: true },
  );
  outs.forEach((o, i) => {
    console.log(
      `sample ${i}: ${JSON.stringify(prompts[i])} → ${JSON.stringify(decode(o.tokens))} [${o.finishReason}]`,
    );
  });
}
model.dispose();
