/**
 * `rlaif label`: AI preference labels for a reward model (docs/reward-model.md): two samples
 * per prompt from the policy, the labeller's higher-scored one chosen, written as JSONL. Prints
 * how many pairs were written and how many were skipped (ties, ABSTAIN, ERROR) on stderr.
 */
import { writeFileSync } from "node:fs";
import { ConfigError } from "../../core/src/errors.js";
import { labelLine } from "../../core/src/learn/preference-labels.js";
import { startBackend } from "../../core/src/model/backend.js";
import { heldOutPrompts } from "../../core/src/model/corpus.js";
import { loadModel } from "../../core/src/model/model-source.js";
import { compositeScorer } from "../../feedback/composite-scorer.js";
import { DEFAULT_PROMPT_COUNT } from "../../optimizer/main.js";
import type { CommandRun } from "../args.js";
import { type Labeller, labelPairs, remoteLabeller, scorerLabeller } from "../preference-labelling.js";
import { checkFeedback } from "../preflight.js";
import { MAX_LABEL_PAIRS } from "../rm-specs.js";
import { readPrompts } from "./sample.js";
import { requireModel } from "./shared-flags.js";

/** `--pairs`: a whole number in 1..MAX_LABEL_PAIRS. */
function parsePairs(raw: unknown): number {
  const n = typeof raw === "string" && /^\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  if (!(n >= 1 && n <= MAX_LABEL_PAIRS))
    throw new ConfigError(`--pairs must be a whole number in 1..${MAX_LABEL_PAIRS}, got "${String(raw)}"`);
  return n;
}

/** What `rlaif label` does (its command line is declared in rm-specs.ts). */
export const labelCommand: CommandRun = {
  async run({ config, flags }) {
    const pairs = parsePairs(flags.pairs);
    const out = flags.out;
    if (typeof out !== "string" || out === "") throw new ConfigError("--out <labels.jsonl> is required");
    const which = typeof flags.labeller === "string" ? flags.labeller : "builtin";
    if (which !== "builtin" && !/^[^\s:]+:\d{1,5}$/.test(which))
      throw new ConfigError(`--labeller must be "builtin" or host:port of a FeedbackService, got "${which}"`);
    const s = config.services;
    const prompts =
      typeof flags.prompts === "string"
        ? readPrompts(flags.prompts)
        : heldOutPrompts(DEFAULT_PROMPT_COUNT, config.run.seed);
    requireModel(config);
    let labeller: Labeller;
    if (which === "builtin") labeller = scorerLabeller(compositeScorer(s.feedbackRules));
    else {
      await checkFeedback(which, "--labeller");
      labeller = remoteLabeller(which, s.feedbackTimeoutMs);
    }
    await startBackend(s.backend);
    const model = await loadModel(s.checkpoint);
    try {
      const res = await labelPairs(model, prompts, pairs, config.run, labeller);
      writeFileSync(out, res.labels.map((l) => `${labelLine(l)}\n`).join(""));
      const who = await labeller.info();
      process.stderr.write(
        `rlaif label: ${res.labels.length} of ${pairs} pairs written to ${out} (labeller ${who.id} ${who.version}); ` +
          `skipped: ${res.ties} ties, ${res.abstained} abstained, ${res.errors} errors\n`,
      );
    } finally {
      model.dispose();
      labeller.close();
    }
  },
};
