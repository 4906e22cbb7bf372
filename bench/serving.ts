/**
 * The Policy's serving benchmark: how fast one replica answers the requests a training run sends
 * it. A run's step sends P = 8 Generate calls of G = 8 samples at once (one per prompt job, from
 * concurrent Rollout jobs), then 8 reference Logprobs calls; this measures that pattern against
 * one call carrying all 64 rows, over real gRPC on loopback:
 *
 *   npx tsx bench/serving.ts [--checkpoint file] [--repeats 5] [--tokens 24] [--json]
 *                            [--train-steps 0] [--rollout-concurrency n]
 *
 * Reported per pattern: median wall time of the batch of calls and sampled tokens per second
 * (every generated token, EOS included, over the wall time). With --train-steps n it also runs
 * `rlaif train`'s embedded cluster (default settings, the Policy on the main thread;
 * --rollout-concurrency overrides that setting) for n steps and reports, over steps 2..n, the median time from a step's first Generate call to
 * its last one ending (one weights version is one step; each Generate the replica serves is
 * timed by wrapping PolicyModel.generate) and the median step time. Figures depend on the
 * machine's load; compare patterns from the same run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { PolicyService, WeightsSelector } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { DEFAULT_CHECKPOINT, defaultConfig } from "../services/core/src/config/settings.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { jobSeed } from "../services/optimizer/run-helpers.js";
import { startPolicyServer } from "../services/policy/main.js";
import { PolicyModel } from "../services/policy/policy-model.js";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string", default: DEFAULT_CHECKPOINT },
    repeats: { type: "string", default: "5" },
    tokens: { type: "string", default: "24" },
    json: { type: "boolean", default: false },
    "train-steps": { type: "string", default: "0" },
    "rollout-concurrency": { type: "string" },
  },
});
const repeats = Number(values.repeats);
const maxNewTokens = Number(values.tokens);
const PROMPTS = 8;
const SAMPLES = 8;

const policy = await startPolicyServer({
  host: "127.0.0.1",
  port: 0,
  checkpoint: values.checkpoint,
  backend: "auto",
});
const client = createClient(PolicyService, policy.server.address, { defaultTimeoutMs: 600_000 });
const prompts = heldOutPrompts(PROMPTS, 1);

/** The sampling a run's job uses (default run settings), seeded like job `index` of `step`. */
const sampling = (step: number, index: number) => ({ maxNewTokens, seed: BigInt(jobSeed(1, step, index)) });

interface Figure {
  pattern: string;
  medianMs: number;
  tokensPerSecond: number;
}

/** Runs `call` `repeats` times (after one warm-up) and reports its median wall time. */
async function measure(pattern: string, call: (rep: number) => Promise<number>): Promise<Figure> {
  await call(0);
  const walls: { ms: number; tokens: number }[] = [];
  for (let rep = 1; rep <= repeats; rep++) {
    const t0 = performance.now();
    const tokens = await call(rep);
    walls.push({ ms: performance.now() - t0, tokens });
  }
  walls.sort((a, b) => a.ms - b.ms);
  const mid = walls[walls.length >> 1] as { ms: number; tokens: number };
  return { pattern, medianMs: mid.ms, tokensPerSecond: (mid.tokens / mid.ms) * 1000 };
}

const tokenCount = (res: { completions: { tokens: number[] }[] }[]) =>
  res.reduce((n, r) => n + r.completions.reduce((m, c) => m + c.tokens.length, 0), 0);

const figures: Figure[] = [];
figures.push(
  await measure(`Generate: ${PROMPTS} concurrent calls × ${SAMPLES} samples`, async (rep) =>
    tokenCount(
      await Promise.all(
        prompts.map((p, i) =>
          client.generate({ prompts: [p], samplesPerPrompt: SAMPLES, sampling: sampling(rep, i) }),
        ),
      ),
    ),
  ),
);
figures.push(
  await measure(`Generate: 1 call × ${PROMPTS} prompts × ${SAMPLES} samples`, async (rep) =>
    tokenCount([await client.generate({ prompts, samplesPerPrompt: SAMPLES, sampling: sampling(rep, 0) })]),
  ),
);
// Reference log-probs of one step's completions, as the Rollout jobs ask for them.
const step = await Promise.all(
  prompts.map((p, i) =>
    client.generate({ prompts: [p], samplesPerPrompt: SAMPLES, sampling: sampling(99, i) }),
  ),
);
const sequences = step.map((r) =>
  r.completions.map((c) => ({ promptTokens: c.promptTokens, completionTokens: c.tokens })),
);
figures.push(
  await measure(`Logprobs: ${PROMPTS} concurrent calls × ${SAMPLES} sequences`, async () => {
    await Promise.all(
      sequences.map((s) => client.logprobs({ weights: WeightsSelector.REFERENCE, sequences: s })),
    );
    return 0;
  }),
);
figures.push(
  await measure(`Logprobs: 1 call × ${PROMPTS * SAMPLES} sequences`, async () => {
    await client.logprobs({ weights: WeightsSelector.REFERENCE, sequences: sequences.flat() });
    return 0;
  }),
);

client.close();
await policy.close();

/** An embedded training run: per step (weights version), the span of its Generate calls. */
async function trainSteps(steps: number): Promise<{ generateMs: number; stepMs: number }> {
  const spans = new Map<object, { start: number; end: number }>();
  const generate = PolicyModel.prototype.generate;
  PolicyModel.prototype.generate = function (this: PolicyModel, ...args) {
    const span = spans.get(this) ?? { start: performance.now(), end: 0 };
    spans.set(this, span);
    return generate.apply(this, args).finally(() => {
      span.end = Math.max(span.end, performance.now());
    });
  };
  const config = defaultConfig();
  config.run.steps = steps;
  config.services.checkpoint = values.checkpoint;
  if (values["rollout-concurrency"])
    config.services.rolloutConcurrency = Number(values["rollout-concurrency"]);
  // The Policy on this thread, where the wrapper above sees its calls (a worker thread has its own
  // PolicyModel class); with the run's default max_staleness 0 sampling and learning alternate
  // either way, so a step's Generate span is the same.
  config.services.policyIn = "main";
  config.out = mkdtempSync(join(tmpdir(), "rlaif-serving-bench-"));
  const cluster = await startEmbeddedCluster(config, () => {});
  const run = await cluster.optimizer.runs.start(config.run);
  await run.done;
  await cluster.close();
  rmSync(config.out, { recursive: true, force: true });
  PolicyModel.prototype.generate = generate;
  const byStep = [...spans.values()].sort((a, b) => a.start - b.start).slice(1); // step 1 warms up
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? Number.NaN;
  return {
    generateMs: median(byStep.map((s) => s.end - s.start)),
    stepMs: median(byStep.slice(1).map((s, i) => s.start - (byStep[i] as { start: number }).start)),
  };
}

const train = Number(values["train-steps"]) > 0 ? await trainSteps(Number(values["train-steps"])) : null;
if (values.json) process.stdout.write(`${JSON.stringify({ maxNewTokens, repeats, figures, train })}\n`);
else {
  if (train) {
    process.stdout.write(
      `rlaif train (embedded, rollout concurrency ${values["rollout-concurrency"] ?? defaultConfig().services.rolloutConcurrency}): generate ${train.generateMs.toFixed(0)} ms of a ${train.stepMs.toFixed(0)} ms step (medians of steps 2..${values["train-steps"]})\n`,
    );
  }
  for (const f of figures) {
    const rate = f.tokensPerSecond > 0 ? `, ${Math.round(f.tokensPerSecond)} tokens/s` : "";
    process.stdout.write(`${f.pattern}: ${f.medianMs.toFixed(0)} ms${rate}\n`);
  }
}
