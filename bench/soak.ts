/**
 * The soak: does a long embedded run keep its memory flat? Runs `rlaif train`'s embedded cluster
 * (the same services, threads and in-memory bus as the CLI) for a wall-clock duration, samples
 * the memory of every thread that holds a TensorFlow.js (main, the Policy's thread, the learner's
 * thread) every n steps, and prints the series, the RSS growth from the first steady-state sample
 * to the last as a percentage, and PASS/FAIL:
 *
 *   npx tsx bench/soak.ts [--minutes 30] [--every 5] [--steady-step 10] [rlaif train flags]
 *   npx tsx bench/soak.ts --steps 6 --every 1 --steady-step 2 ...   # a fixed number of steps (CI)
 *
 * PASS needs both: RSS within ±10% of the steady-state sample (`--tolerance`), and every
 * thread's live tensor count (`tf.memory().numTensors`) not growing: its highest value over the
 * last fifth of the samples no higher than over the first fifth from the steady state. The end is the sample of the last step trained; one more is taken after the run has
 * ended (final checkpoint, held-out evaluation, report) and printed apart, not judged.
 * Why from a steady state and not from the start: the first steps grow the wasm heaps to
 * their high-water mark (the largest batch, the KV caches, the Adam moments), which the heap keeps
 * and reuses; a leak is what grows after that. The wasm heap size per thread is printed so a
 * growing RSS can be told apart: wasm heap flat and tensors flat but RSS growing is the JS side
 * (heap, external buffers); wasm heap growing with flat tensors is fragmentation.
 *
 * Any `rlaif train` setting flag is accepted (e.g. `--checkpoint checkpoints/transformer`);
 * `--config file` reads a config file first. The last stdout line is the report as JSON.
 */
import { parseArgs } from "node:util";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { SETTINGS } from "../services/core/src/config/settings.js";
import { type ThreadMemory, threadMemory } from "../services/core/src/thread/memory-probe.js";

function usage(message: string): never {
  process.stderr.write(`bench/soak.ts: ${message}\n`);
  process.exit(2);
}

const OWN = {
  minutes: { type: "string" },
  every: { type: "string" },
  "steady-step": { type: "string" },
  tolerance: { type: "string" },
  config: { type: "string" },
} as const;
const { values } = parseArgs({
  options: {
    ...OWN,
    ...Object.fromEntries(
      SETTINGS.filter((s) => s.type !== "strings").map((s) => [s.flag, { type: "string" as const }]),
    ),
  },
});
const {
  minutes: rawMinutes,
  every: rawEvery,
  "steady-step": rawSteady,
  tolerance: rawTol,
  config: file,
  ...rest
} = values;
const flags = rest as Record<string, string | undefined>;
const number = (
  flag: string,
  raw: string | undefined,
  fallback: number,
  ok: (n: number) => boolean,
  what: string,
) => {
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isFinite(n) || !ok(n)) usage(`--${flag} must be ${what}, got ${raw}`);
  return n;
};
const minutes = number("minutes", rawMinutes, 30, (n) => n > 0, "a number of minutes > 0");
const every = number("every", rawEvery, 5, (n) => Number.isInteger(n) && n >= 1, "an integer ≥ 1");
const steadyStep = number(
  "steady-step",
  rawSteady,
  10,
  (n) => Number.isInteger(n) && n >= 1,
  "an integer ≥ 1",
);
const tolerance = number("tolerance", rawTol, 10, (n) => n > 0, "a percentage > 0");
// With --steps the run is that long; without, it runs (up to the most steps a run may have)
// until the duration is over and is then cancelled.
const fixedSteps = flags.steps !== undefined;
const config = loadConfig(file, { out: "runs/bench-soak", ...flags, steps: flags.steps ?? "100000" });
if (fixedSteps && steadyStep > config.run.steps)
  usage(`--steady-step ${steadyStep} is past the run's last step (--steps ${config.run.steps})`);

/** One sample: the step just finished, seconds since the start and each thread's memory. */
interface Sample {
  step: number;
  seconds: number;
  main: ThreadMemory;
  policy: ThreadMemory | null;
  learner: ThreadMemory | null;
}

const mb = (bytes: number) => Math.round(bytes / 2 ** 20);
const row = (s: Sample) => {
  const t = (name: string, m: ThreadMemory | null) =>
    m
      ? `${name} heap ${mb(m.heapUsed)} ext ${mb(m.external)} wasm ${mb(m.wasmHeap)} tensors ${m.numTensors} (${mb(m.numBytes)} MB)`
      : `${name} -`;
  return `step ${s.step} t ${s.seconds.toFixed(0)}s rss ${mb(s.main.rss)} MB | ${t("main", s.main)} | ${t("policy", s.policy)} | ${t("learner", s.learner)}`;
};

const started = performance.now();
const cluster = await startEmbeddedCluster(config, () => {});
const samples: Sample[] = [];
/** A sample after the run ended (final save and report done), printed but not judged. */
let afterRun: Sample | null = null;
let summaryError: string | null = null;
try {
  const run = await cluster.optimizer.runs.start(config.run);
  const probe = async (step: number): Promise<Sample> => {
    const [policy, learner] = await Promise.all([
      cluster.policyThread?.memory() ?? null,
      run.learner.memory?.() ?? null,
    ]);
    return { step, seconds: (performance.now() - started) / 1000, main: threadMemory(), policy, learner };
  };
  let probing = Promise.resolve();
  const record = (step: number) => {
    probing = probing.then(async () => {
      const s = await probe(step);
      samples.push(s);
      process.stdout.write(`${row(s)}\n`);
    });
  };
  let last = 0;
  let timeUp = false;
  const timer = fixedSteps ? undefined : setTimeout(() => (timeUp = true), minutes * 60_000);
  run.watchers.add((m) => {
    if (!m) return;
    last = m.step;
    const final = m.step === config.run.steps || timeUp;
    if (m.step === 1 || m.step === steadyStep || m.step % every === 0 || final) record(m.step);
    // The last training sample is taken when its step is reported, like every other one, and
    // only then is the run cancelled: what the run does after its last step (the final
    // checkpoint, the held-out evaluation, the report) is not a training step, and is printed
    // apart below.
    if (timeUp && !run.cancelRequested)
      probing = probing.then(() =>
        cluster.optimizer.runs.cancel(run.runId).then(
          () => undefined,
          () => undefined,
        ),
      );
  });
  const summary = await run.done;
  clearTimeout(timer);
  if (!summary && !run.cancelRequested) summaryError = run.error || "the run failed";
  await probing;
  if (last > 0) afterRun = await probe(last);
} finally {
  await cluster.close();
}
if (summaryError) usage(`training failed: ${summaryError}`);

const steady = samples.find((s) => s.step >= steadyStep);
const end = samples.at(-1);
if (!steady || !end || end === steady)
  usage(`the run ended before a sample after --steady-step ${steadyStep} (raise --minutes or --steps)`);
const rssGrowth = ((end.main.rss - steady.main.rss) / steady.main.rss) * 100;
const threads = ["main", "policy", "learner"] as const;
// Live tensors are judged by window, not by two snapshots: a thread's count moves between a few
// values as work passes through it (the Policy's holds 12 more while a swap or a batch is in
// flight), so one sample against another compares moments, not levels. A leak raises the count
// step after step; it shows as the highest count of the last fifth of the samples exceeding the
// highest of the first fifth after the steady step.
const judged = samples.filter((s) => s.step >= steady.step);
const fifth = Math.max(1, Math.floor(judged.length / 5));
const highest = (window: Sample[], t: (typeof threads)[number]) =>
  Math.max(...window.map((s) => s[t]?.numTensors ?? 0));
const tensors = Object.fromEntries(
  threads.map((t) => [
    t,
    {
      steady: steady[t]?.numTensors ?? null,
      end: end[t]?.numTensors ?? null,
      firstFifthMax: highest(judged.slice(0, fifth), t),
      lastFifthMax: highest(judged.slice(-fifth), t),
    },
  ]),
);
const tensorsFlat = threads.every(
  (t) => highest(judged.slice(-fifth), t) <= highest(judged.slice(0, fifth), t),
);
const rssFlat = Math.abs(rssGrowth) <= tolerance;
const pass = rssFlat && tensorsFlat;
const perStep = (end.main.rss - steady.main.rss) / 2 ** 20 / (end.step - steady.step);
process.stdout.write(
  `RSS ${mb(steady.main.rss)} MB at step ${steady.step} → ${mb(end.main.rss)} MB at step ${end.step}: ` +
    `${rssGrowth >= 0 ? "+" : ""}${rssGrowth.toFixed(1)}% (${perStep.toFixed(2)} MB/step); tensors ` +
    `${threads.map((t) => `${t} ${tensors[t]?.steady ?? "-"}→${tensors[t]?.end ?? "-"} (highest ${tensors[t]?.firstFifthMax}→${tensors[t]?.lastFifthMax})`).join(", ")}: ` +
    `${pass ? "PASS" : "FAIL"} (±${tolerance}% RSS, highest live tensors of the last fifth ≤ the first's)\n`,
);
if (afterRun)
  process.stdout.write(
    `after the run ended (final checkpoint, held-out evaluation and report written): rss ${mb(afterRun.main.rss)} MB, not judged\n`,
  );
process.stdout.write(
  `${JSON.stringify({
    checkpoint: config.services.checkpoint,
    minutes: fixedSteps ? null : minutes,
    steps: end.step,
    steadyStep: steady.step,
    rssMb: samples.map((s) => [s.step, mb(s.main.rss)]),
    rssSteadyMb: mb(steady.main.rss),
    rssEndMb: mb(end.main.rss),
    rssAfterRunMb: afterRun ? mb(afterRun.main.rss) : null,
    rssGrowthPercent: Number(rssGrowth.toFixed(2)),
    rssMbPerStep: Number(perStep.toFixed(3)),
    wasmHeapMb: Object.fromEntries(
      threads.map((t) => [t, { steady: mb(steady[t]?.wasmHeap ?? 0), end: mb(end[t]?.wasmHeap ?? 0) }]),
    ),
    tensors,
    rssFlat,
    tensorsFlat,
    verdict: pass ? "PASS" : "FAIL",
  })}\n`,
);
