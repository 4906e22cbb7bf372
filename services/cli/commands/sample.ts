/**
 * `rlaif sample`: complete prompts from a file with any checkpoint (the pretrained default, or a
 * run's final.safetensors), so a policy can be compared before and after training with a judge
 * of one's own. `--json` prints one JSON object per prompt per line. `--stop <text>` (repeatable)
 * ends a completion at a stop sequence, as the Policy's SamplingParams.stop does: the text leaves
 * the stop sequence out, the token count and summed log-prob include its tokens.
 */
import { readFileSync } from "node:fs";
import { ConfigError } from "../../core/src/errors.js";
import { MAX_STOP_BYTES, MAX_STOP_SEQUENCES } from "../../core/src/grpc/rules.js";
import { startBackend } from "../../core/src/model/backend.js";
import { loadModel } from "../../core/src/model/model-source.js";
import { generate } from "../../core/src/model/sampler.js";
import { completionText } from "../../core/src/model/sampling.js";
import { tokenizerOf } from "../../core/src/model/tokenizer.js";
import type { CommandRun } from "../args.js";
import { requireModel } from "./shared-flags.js";

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

/** The `--stop` values: at most MAX_STOP_SEQUENCES, each 1..MAX_STOP_BYTES bytes of UTF-8. */
export function readStops(raw: string | string[] | boolean | undefined): string[] {
  const stops = raw === undefined ? [] : Array.isArray(raw) ? raw : [String(raw)];
  if (stops.length > MAX_STOP_SEQUENCES) {
    throw new ConfigError(`--stop may be given at most ${MAX_STOP_SEQUENCES} times, got ${stops.length}`);
  }
  for (const s of stops) {
    const bytes = Buffer.byteLength(s, "utf8");
    if (bytes < 1 || bytes > MAX_STOP_BYTES) {
      throw new ConfigError(
        `--stop must be 1..${MAX_STOP_BYTES} bytes of UTF-8, got ${bytes} (${JSON.stringify(s)})`,
      );
    }
  }
  return stops;
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
    const stop = readStops(flags.stop);
    const prompts = readPrompts(file);
    requireModel(config);
    const { checkpoint, backend } = config.services;
    await startBackend(backend);
    const model = await loadModel(checkpoint);
    try {
      const r = config.run;
      const tok = tokenizerOf(model);
      const rows = prompts.flatMap((p) => Array.from({ length: samples }, () => tok.encode(p)));
      const results = await generate(model, rows, {
        maxNewTokens: r.maxNewTokens,
        temperature: r.temperature,
        topK: r.topK,
        topP: r.topP,
        seed: r.seed,
        stopAtEos: true,
        stop,
      });
      prompts.forEach((prompt, i) => {
        const completions = results.slice(i * samples, (i + 1) * samples).map((g) => ({
          text: completionText(g, tok),
          tokens: g.tokens.length,
          logprob: g.logprobs.reduce((a, b) => a + b, 0),
          finishReason: g.finishReason,
          ...(g.stop === undefined ? {} : { stop: g.stop }),
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
