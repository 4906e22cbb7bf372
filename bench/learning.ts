/**
 * The learning benchmark (docs/architecture.md#learning-benchmark): does the policy get better under AI feedback without
 * breaking? Trains the given checkpoint with `rlaif train`'s embedded cluster on held-out corpus
 * prompts and the rule-based positive-sentiment scorer, then compares the pretrained policy and
 * the trained one on OTHER held-out prompts, measured in the same run:
 *
 *   npx tsx bench/learning.ts [--checkpoint file] [--steps 90] [--config file] [--out dir] [--json]
 *
 * Reported: mean held-out reward before → after and the rise in units of the pretrained
 * policy's reward std (target ≥ 1), the share of samples rated positive before → after
 * (target: at least doubles), KL to the reference in nats per sample (target ≤ 5), and the
 * collapse guards distinct-2, repetition and reference perplexity, with a few samples.
 */
import { parseArgs } from "node:util";
import { EVAL_SEED, heldOutEvalPrompts } from "../services/cli/held-out-eval.js";
import { measureSamples, type SampleQuality } from "../services/cli/sample-quality.js";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { startBackend } from "../services/core/src/model/backend.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { DEFAULT_PROMPT_COUNT } from "../services/optimizer/main.js";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string" },
    steps: { type: "string", default: "90" },
    config: { type: "string" },
    "eval-prompts": { type: "string", default: "64" },
    samples: { type: "string", default: "4" },
    out: { type: "string", default: "runs/bench" },
    json: { type: "boolean", default: false },
  },
});

const config = loadConfig(values.config, {
  steps: values.steps,
  ...(values.checkpoint ? { checkpoint: values.checkpoint } : {}),
  out: values.out,
});
const evalCount = Number(values["eval-prompts"]);
const samples = Number(values.samples);
// Training prompts are the run's default ones; evaluation prompts come after them in the same
// seeded order of held-out sentences, so the two sets never overlap (as at the end of rlaif train).
config.run.prompts = heldOutPrompts(DEFAULT_PROMPT_COUNT, config.run.seed);
const evalPrompts = heldOutEvalPrompts(evalCount, config.run.seed);
const evalOpts = { samples, maxNewTokens: config.run.maxNewTokens, seed: EVAL_SEED };

const backend = await startBackend(config.services.backend);
const reference = await loadModel(config.services.checkpoint);
const before = await measureSamples(reference, reference, evalPrompts, evalOpts);

const started = performance.now();
const cluster = await startEmbeddedCluster(config, () => {});
const run = await cluster.optimizer.runs.start(config.run);
run.watchers.add((m) => {
  if (m && !values.json)
    process.stderr.write(`step ${m.step}: reward ${m.meanReward.toFixed(3)} kl ${m.kl.toFixed(3)}\n`);
});
const summary = await run.done;
await cluster.close();
if (!summary) throw new Error(`training failed: ${run.error}`);
const trainSeconds = (performance.now() - started) / 1000;

// loadModel: a LoRA run's final checkpoint is its base plus adapters, evaluated with them on.
const trained = await loadModel(summary.checkpointPath);
const after = await measureSamples(trained, reference, evalPrompts, evalOpts);

const rise = (after.meanReward - before.meanReward) / Math.max(before.stdReward, 1e-9);
const shareRatio = after.positiveShare / Math.max(before.positiveShare, 1e-9);
const report = {
  backend,
  checkpoint: config.services.checkpoint,
  steps: summary.steps,
  trainSeconds,
  evalPrompts: evalPrompts.length,
  samplesPerPrompt: samples,
  before,
  after,
  rewardRiseInPretrainedStd: rise,
  positiveShareRatio: shareRatio,
  targets: {
    rewardRiseAtLeastOneStd: rise >= 1,
    positiveShareAtLeastDoubles: shareRatio >= 2,
    klAtMost5Nats: after.klToReference <= 5,
  },
};
if (values.json) {
  process.stdout.write(`${JSON.stringify(report)}\n`);
} else {
  const row = (name: string, f: (q: SampleQuality) => number, digits = 3) =>
    `${name.padEnd(26)}${f(before).toFixed(digits).padStart(10)}${f(after).toFixed(digits).padStart(10)}`;
  process.stdout.write(
    [
      `backend ${backend}, ${summary.steps} steps in ${trainSeconds.toFixed(0)} s, ${evalPrompts.length} held-out prompts × ${samples}`,
      `${"".padEnd(26)}${"before".padStart(10)}${"after".padStart(10)}`,
      row("mean reward", (q) => q.meanReward),
      row("reward std", (q) => q.stdReward),
      row("positive share", (q) => q.positiveShare),
      row("KL to reference (nats)", (q) => q.klToReference),
      row("distinct-2", (q) => q.distinct2),
      row("repetition (trigrams)", (q) => q.repetition),
      row("reference perplexity", (q) => q.referencePerplexity, 2),
      ...(before.dictionaryWords === undefined
        ? []
        : [row("dictionary words", (q) => q.dictionaryWords ?? Number.NaN)]),
      `reward rise: ${rise.toFixed(2)} pretrained std (target ≥ 1); positive share ×${shareRatio.toFixed(2)} (target ≥ 2); KL ${after.klToReference.toFixed(2)} nats (target ≤ 5)`,
      "samples after training:",
      ...after.examples.map(
        (e) => `  ${JSON.stringify(e.prompt)} → ${JSON.stringify(e.completion)} (${e.reward.toFixed(2)})`,
      ),
      "",
    ].join("\n"),
  );
}
reference.dispose();
trained.dispose();
