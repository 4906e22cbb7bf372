/**
 * `rlaif sample`: complete prompts from a file with any checkpoint (the pretrained default, or a
 * run's final.safetensors), so a policy can be compared before and after training with a judge
 * of one's own. `--json` prints one JSON object per prompt per line.
 */
import { readFileSync } from "node:fs";
import { ConfigError } from "../../core/src/errors.js";
import { startBackend } from "../../core/src/model/backend.js";
import { loadCheckpoint, modelFromCheckpoint } from "../../core/src/model/checkpoint.js";
import { generate } from "../../core/src/model/sampler.js";
import { decode, encode } from "../../core/src/model/tokenizer.js";
import type { CommandRun } from "../args.js";
import { requireCheckpoint } from "./shared-flags.js";

/** Prompts of a file: one per line, blank lines skipped. */
export function readPrompts(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new ConfigError(`cannot read --prompts file ${path}: ${(cause as Error).message}`, { cause });
  }
  const prompts = text.split(/\r?\n/).filter((line) => line.trim() !== "");
  if (prompts.length === 0)
    throw new ConfigError(`--prompts file ${path} has no prompts (one prompt a line)`);
  return prompts;
}

/** What `rlaif sample` does (its command line is declared in specs.ts). */
export const sampleCommand: CommandRun = {
  async run({ config, flags }) {
    const file = flags.prompts;
    if (typeof file !== "string" || !file)
      throw new ConfigError("--prompts <file> is required (one prompt a line)");
    const samples = flags.samples === undefined ? 1 : Number(flags.samples);
    if (!Number.isInteger(samples) || samples < 1 || samples > 64) {
      throw new ConfigError(`--samples must be a whole number in 1..64, got "${String(flags.samples)}"`);
    }
    const prompts = readPrompts(file);
    const { checkpoint, backend } = config.services;
    requireCheckpoint(checkpoint);
    await startBackend(backend);
    const model = modelFromCheckpoint(await loadCheckpoint(checkpoint));
    try {
      const r = config.run;
      const rows = prompts.flatMap((p) => Array.from({ length: samples }, () => encode(p)));
      const results = await generate(model, rows, {
        maxNewTokens: r.maxNewTokens,
        temperature: r.temperature,
        topK: r.topK,
        topP: r.topP,
        seed: r.seed,
        stopAtEos: true,
      });
      prompts.forEach((prompt, i) => {
        const completions = results.slice(i * samples, (i + 1) * samples).map((g) => ({
          text: decode(g.tokens),
          tokens: g.tokens.length,
          logprob: g.logprobs.reduce((a, b) => a + b, 0),
          finishReason: g.finishReason,
        }));
        if (flags.json === true) {
          process.stdout.write(`${JSON.stringify({ prompt, completions, checkpoint })}\n`);
        } else {
          for (const c of completions)
            process.stdout.write(`${JSON.stringify(prompt)} → ${JSON.stringify(c.text)}\n`);
        }
      });
    } finally {
      model.dispose();
    }
  },
};
