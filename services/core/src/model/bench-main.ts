/**
 * Throughput check of the model layer, so performance claims can be re-measured on any machine:
 *
 *   npx tsx services/core/src/model/bench-main.ts [--checkpoint file] [--backend wasm] [--steps 10]
 *
 * Prints the median training step time (forward + backward + clipping + AdamW) at batch
 * `--batch`×64 (default 16), sampling throughput for `--rows` prompts (default 16) × 32 new
 * tokens with the KV cache, and the time of one batched `sequenceLogprobs` call over those rows.
 */
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { type BackendName, initBackend } from "./backend.js";
import { loadCheckpoint, modelFromCheckpoint } from "./checkpoint.js";
import { DEFAULT_CONFIG } from "./config.js";
import { heldOutPrompts, loadCorpusSplit } from "./corpus.js";
import { maskedCrossEntropy } from "./loss.js";
import { AdamW, clipByGlobalNorm } from "./optim.js";
import { buildStream, sampleWindows } from "./pretrain.js";
import { Rng } from "./rng.js";
import { generate, sequenceLogprobs } from "./sampler.js";
import { encode } from "./tokenizer.js";
import { Transformer } from "./transformer.js";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string" },
    backend: { type: "string" },
    steps: { type: "string", default: "10" },
    batch: { type: "string", default: "16" },
    rows: { type: "string", default: "16" },
  },
});
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const backend = await initBackend(values.backend as BackendName | undefined);
const model =
  values.checkpoint === undefined
    ? new Transformer(DEFAULT_CONFIG, 1)
    : modelFromCheckpoint(await loadCheckpoint(values.checkpoint));
const rows = Number(values.batch);
const t = model.config.contextLength;
console.log(`backend=${backend} config=${JSON.stringify(model.config)}`);

// Training steps on a copy, so a loaded checkpoint is not modified.
const trainee = new Transformer(model.config, 2);
const stream = buildStream(loadCorpusSplit().train.slice(0, 5000));
const rng = new Rng(3);
const opt = new AdamW(trainee.variables());
const stepMs: number[] = [];
for (let i = 0; i < Number(values.steps) + 2; i++) {
  const w = sampleWindows(stream, rows, t, rng, 0.5);
  const started = performance.now();
  const x = tf.tensor2d(w.x, [rows, t], "int32");
  const y = tf.tensor2d(w.y, [rows, t], "int32");
  const m = tf.tensor2d(w.mask, [rows, t]);
  const { value, grads } = tf.variableGrads(
    () => maskedCrossEntropy(trainee.forward(x), y, m),
    trainee.variables(),
  );
  value.dataSync();
  const clipped = clipByGlobalNorm(grads, 1);
  opt.apply(clipped.grads, 1e-3);
  tf.dispose([x, y, m, value, ...Object.values(grads), ...Object.values(clipped.grads)]);
  if (i >= 2) stepMs.push(performance.now() - started);
}
opt.dispose();
trainee.dispose();
console.log(
  `train step (batch ${rows}x${t}): median ${median(stepMs).toFixed(0)} ms over ${stepMs.length} steps`,
);

const prompts = heldOutPrompts(Number(values.rows), 1).map((p) => encode(p));
const params = { maxNewTokens: 32, temperature: 1, topK: 0, topP: 1, seed: 1, stopAtEos: false };
generate(model, prompts, { ...params, maxNewTokens: 4 });
const runs: number[] = [];
let outs = generate(model, prompts, params);
for (let i = 0; i < 3; i++) {
  const started = performance.now();
  outs = generate(model, prompts, { ...params, seed: i });
  runs.push(performance.now() - started);
}
const tokens = outs.reduce((n, o) => n + o.tokens.length, 0);
console.log(
  `sampling ${prompts.length} x ${params.maxNewTokens} new tokens (KV cache): median ${median(runs).toFixed(0)} ms = ${((tokens / median(runs)) * 1000).toFixed(0)} tokens/s`,
);
const started = performance.now();
sequenceLogprobs(
  model,
  prompts,
  outs.map((o) => o.tokens),
);
console.log(
  `sequenceLogprobs of the same ${prompts.length} rows: ${(performance.now() - started).toFixed(0)} ms`,
);
model.dispose();
