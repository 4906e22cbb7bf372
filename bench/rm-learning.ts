/**
 * The reward-model learning benchmark (docs/reward-model.md#rlaif-with-the-reward-model-as-the-only-feedback):
 * does an RLAIF run whose ONLY feedback is a reward model learnt from a rule's labels raise the
 * rule's own score on prompts neither the labels nor the run saw? Why measured with the rule and
 * not with the RM alone: a policy can raise a learnt reward by exploiting its errors; the rule's
 * score rising too says the RM passed on what the labeller wanted.
 *
 *   npx tsx bench/rm-learning.ts [--checkpoint file] [--rule "length(4-6):1"] [--pairs 8000]
 *     [--label-prompts 1024] [--steps 30] [--eval-prompts 256] [--out dir] [--json]
 *
 * Steps: label `--pairs` sample pairs of `--label-prompts` corpus prompts with the rule
 * (`rlaif label`), train a reward model on them (`rlaif train-rm`, 20% of the prompts held out),
 * train the checkpoint with `rlaif train`'s embedded cluster scored by that RM alone, then sample
 * the starting and the trained policy on the held-out evaluation prompts (one sample each, the
 * same seed, as `rlaif train`'s held-out report) and score both with the rule and the RM.
 * Evaluation prompts are removed from the labelling prompts, so no evaluated prompt was labelled.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { EVAL_SEED, heldOutEvalPrompts } from "../services/cli/held-out-eval.js";
import { labelPairs, scorerLabeller } from "../services/cli/preference-labelling.js";
import { measureSamples, type SampleQuality } from "../services/cli/sample-quality.js";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { DEFAULT_HEAD_TRAINING } from "../services/core/src/learn/reward-head.js";
import { trainRewardModel } from "../services/core/src/learn/reward-model-training.js";
import { startBackend } from "../services/core/src/model/backend.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { loadRewardModel } from "../services/core/src/model/reward-model.js";
import { compositeScorer } from "../services/feedback/composite-scorer.js";
import { DEFAULT_PROMPT_COUNT } from "../services/optimizer/main.js";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string", default: "checkpoints/gru/model.safetensors" },
    rule: { type: "string", default: "length(4-6):1" },
    pairs: { type: "string", default: "8000" },
    "label-prompts": { type: "string", default: "1024" },
    steps: { type: "string", default: "30" },
    "eval-prompts": { type: "string", default: "256" },
    out: { type: "string", default: "runs/bench-rm" },
    json: { type: "boolean", default: false },
  },
});

const log = (line: string) => {
  if (!values.json) process.stderr.write(`${line}\n`);
};
const rmDir = path.join(values.out, "reward-model");
mkdirSync(rmDir, { recursive: true });
const config = loadConfig(undefined, {
  steps: values.steps,
  checkpoint: values.checkpoint,
  out: values.out,
  "reward-model": rmDir,
});
config.run.prompts = heldOutPrompts(DEFAULT_PROMPT_COUNT, config.run.seed);
const evalPrompts = heldOutEvalPrompts(Number(values["eval-prompts"]), config.run.seed);
const evalSet = new Set(evalPrompts);
const labelPrompts = heldOutPrompts(Number(values["label-prompts"]) + evalPrompts.length, 1)
  .filter((p) => !evalSet.has(p))
  .slice(0, Number(values["label-prompts"]));
const rule = compositeScorer(values.rule);

const backend = await startBackend(config.services.backend);
const reference = await loadModel(config.services.checkpoint);
const t0 = performance.now();
const labelled = await labelPairs(
  reference,
  labelPrompts,
  Number(values.pairs),
  config.run,
  scorerLabeller(rule),
);
const trained = trainRewardModel(labelled.labels, {
  backbone: reference,
  backbonePath: config.services.checkpoint,
  labelsFile: "(in memory)",
  outDir: rmDir,
  heldOutShare: 0.2,
  head: DEFAULT_HEAD_TRAINING,
  log,
});
log(
  `reward model: ${labelled.labels.length} pairs (${labelled.ties} ties skipped), held-out accuracy ${((trained.heldOutAccuracy ?? Number.NaN) * 100).toFixed(1)}% in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
);

// One sample per prompt: `examples` then holds every completion, to score with the rule and the RM.
const evalOpts = {
  samples: 1,
  maxNewTokens: config.run.maxNewTokens,
  seed: EVAL_SEED,
  examples: evalPrompts.length,
};
const before = await measureSamples(reference, reference, evalPrompts, evalOpts);

const started = performance.now();
const cluster = await startEmbeddedCluster(config, () => {});
const run = await cluster.optimizer.runs.start(config.run);
run.watchers.add((m) => {
  if (m) log(`step ${m.step}: RM reward ${m.meanReward.toFixed(3)} kl ${m.kl.toFixed(3)}`);
});
const summary = await run.done;
await cluster.close();
if (!summary) throw new Error(`training failed: ${run.error}`);
const trainSeconds = (performance.now() - started) / 1000;
const final = await loadModel(summary.checkpointPath);
const after = await measureSamples(final, reference, evalPrompts, evalOpts);

const rm = await loadRewardModel(rmDir);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
const scores = async (q: SampleQuality) => {
  const items = q.examples.map((e) => ({ prompt: e.prompt, completion: e.completion }));
  const ruleScores = await scorerLabeller(rule).score(items);
  return {
    rule: mean(ruleScores.map((s) => (s.ok ? s.reward : Number.NaN))),
    rm: mean(rm.rewards(items)),
    kl: q.klToReference,
  };
};
const report = {
  backend,
  checkpoint: config.services.checkpoint,
  rule: values.rule,
  labelledPairs: labelled.labels.length,
  rmHeldOutAccuracy: trained.heldOutAccuracy,
  rmHash: trained.config.hash,
  steps: summary.steps,
  trainSeconds,
  evalPrompts: evalPrompts.length,
  before: await scores(before),
  after: await scores(after),
  examples: after.examples.slice(0, 6),
};
if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
else {
  const f = (x: number) => x.toFixed(3).padStart(9);
  process.stdout.write(
    [
      `backend ${backend}, ${report.steps} steps in ${trainSeconds.toFixed(0)} s, feedback: reward model ${report.rmHash.slice(0, 12)} only`,
      `${report.evalPrompts} held-out prompts × 1 sample     before     after`,
      `rule ${values.rule} score      ${f(report.before.rule)} ${f(report.after.rule)}`,
      `reward-model score           ${f(report.before.rm)} ${f(report.after.rm)}`,
      `KL to the start (nats)       ${f(report.before.kl)} ${f(report.after.kl)}`,
      "samples after training:",
      ...report.examples.map((e) => `  ${JSON.stringify(e.prompt)} → ${JSON.stringify(e.completion)}`),
      "",
    ].join("\n"),
  );
}
rm.dispose();
reference.dispose();
final.dispose();
