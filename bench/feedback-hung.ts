/**
 * How long does one hung scorer hold a step? Runs `rlaif train`'s embedded cluster twice with the
 * given settings against a real gRPC FeedbackService (the built-in rule scorer): once healthy,
 * once hung on every call for one of the prompts (`--hung-prompt`, default the last one). Prints
 * one JSON line per run — each step's wall seconds (the Optimizer's own clock), the worst, the
 * excluded samples — and a last line with the bound the settings promise for a hung job:
 * scorer-attempts × feedback-timeout-ms plus the backoffs (full jitter below 200 ms doubling,
 * capped at 2 s), against the measured worst step minus the healthy one.
 *
 *   npx tsx bench/feedback-hung.ts --checkpoint <model> [--steps 2] [--feedback-timeout-ms 15000] [--scorer-attempts 3]
 *
 * Any `rlaif train` setting flag is accepted; `--config file` reads a config file first.
 */
import { parseArgs } from "node:util";
import { startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { SETTINGS } from "../services/core/src/config/settings.js";
import { SCORER_BACKOFF_CAP_MS } from "../services/rollout/scorer-guard.js";
import { startMisbehavingFeedback } from "../test/helpers/misbehaving-feedback.js";

const { values } = parseArgs({
  options: {
    config: { type: "string" },
    "hung-prompt": { type: "string" },
    ...Object.fromEntries(
      SETTINGS.filter((s) => s.type !== "strings").map((s) => [s.flag, { type: "string" as const }]),
    ),
  },
});
const { config: file, "hung-prompt": hungFlag, ...flags } = values;

/** One run against a healthy scorer or one `hung` on a prompt: its steps' wall seconds and exclusions. */
async function measure(hung: boolean) {
  const config = loadConfig(file, { steps: "2", out: "runs/bench-feedback-hung", ...flags });
  const prompts = config.run.prompts.length
    ? config.run.prompts
    : ["The film was", "I think that", "She said", "It is a"];
  config.run.prompts = prompts;
  const victim = hungFlag ?? (prompts.at(-1) as string);
  const fb = await startMisbehavingFeedback({
    mode: hung ? "hang" : "ok",
    only: (p) => p === victim,
  });
  config.services.feedbackAddress = fb.address;
  const cluster = await startEmbeddedCluster(config, () => {});
  try {
    const run = await cluster.optimizer.runs.start(config.run);
    const summary = await run.done;
    if (!summary) throw new Error(`training failed: ${run.error}`);
    const h = run.driver.history;
    const walls = h.map((m, i) => Number((m.wallSeconds - (h[i - 1]?.wallSeconds ?? 0)).toFixed(2)));
    return {
      scorer: hung ? `hung on "${victim}"` : "healthy",
      stepSeconds: walls,
      worstStepSeconds: Math.max(...walls),
      excluded: h.reduce((n, m) => n + m.excluded, 0),
      scorerErrors: summary.scorerErrors,
      config,
    };
  } finally {
    await cluster.close();
    await fb.close();
  }
}

const healthy = await measure(false);
const hung = await measure(true);
for (const r of [healthy, hung]) {
  const { config: _, ...line } = r;
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
const s = hung.config.services;
let backoffs = 0;
for (let n = 1; n < s.scorerAttempts; n++)
  backoffs += Math.min(SCORER_BACKOFF_CAP_MS, s.scorerBackoffMs * 2 ** (n - 1));
process.stdout.write(
  `${JSON.stringify({
    feedbackTimeoutMs: s.feedbackTimeoutMs,
    scorerAttempts: s.scorerAttempts,
    boundSeconds: Number(((s.scorerAttempts * s.feedbackTimeoutMs + backoffs) / 1000).toFixed(2)),
    extraWorstStepSeconds: Number((hung.worstStepSeconds - healthy.worstStepSeconds).toFixed(2)),
  })}\n`,
);
