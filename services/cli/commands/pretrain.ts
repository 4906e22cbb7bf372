/**
 * `rlaif pretrain`: seed step 3.1 (docs/architecture.md#pretraining) — make the initial policy by
 * next-token prediction on the bundled Brown corpus, report held-out loss, perplexity and bits per
 * byte, write it (atomically) and print a few samples as a sanity check of the text. Byte-level
 * by default, written as a checkpoint file; with `--vocab <n>` it first trains a byte-level BPE of
 * n ids on the training split (tokenizer-train.ts) and the model is a GPT-2 written as a Hugging
 * Face model directory (hf-gpt2-dir.ts), the shipped default's form.
 */

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { ConfigError } from "../../core/src/errors.js";
import { startBackend } from "../../core/src/model/backend.js";
import {
  countModelParameters,
  type ModelConfig,
  validateModelConfig,
} from "../../core/src/model/causal-lm.js";
import { checkpointFromModel, saveCheckpoint } from "../../core/src/model/checkpoint.js";
import { heldOutPrompts, loadCorpusSplit } from "../../core/src/model/corpus.js";
import type { HfGpt2Config } from "../../core/src/model/hf-config.js";
import { HfGpt2LM } from "../../core/src/model/hf-gpt2.js";
import { writeGpt2Dir } from "../../core/src/model/hf-gpt2-dir.js";
import { loadHfModel } from "../../core/src/model/hf-model-dir.js";
import { type PretrainLog, pretrain } from "../../core/src/model/pretrain.js";
import { DEFAULT_RNN_CONFIG } from "../../core/src/model/rnn-config.js";
import { generate } from "../../core/src/model/sampler.js";
import { DEFAULT_SEQ2SEQ_CONFIG } from "../../core/src/model/seq2seq-config.js";
import { tokenizerOf } from "../../core/src/model/tokenizer.js";
import { hfTokenizer } from "../../core/src/model/tokenizer-hf.js";
import {
  MIN_BPE_VOCAB,
  type TrainedTokenizer,
  trainByteLevelBpe,
} from "../../core/src/model/tokenizer-train.js";
import { tokensText } from "../../core/src/model/tokenizer-types.js";
import { DEFAULT_TRANSFORMER_CONFIG as DEFAULT_CONFIG } from "../../core/src/model/transformer-config.js";
import type { CommandRun } from "../args.js";

function intFlag(
  flags: Record<string, unknown>,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${name} must be a whole number in ${min}..${max}, got "${String(raw)}"`);
  }
  return n;
}

const NUMBER_FLAGS = [
  "steps",
  "batch",
  "lr",
  "seed",
  "context",
  "d-model",
  "hidden",
  "layers",
  "heads",
  "eval-every",
  "samples",
  "vocab",
];

/** A fresh GPT-2 of the Transformer's shape over a tokenizer trained on the corpus (`--vocab`). */
function bpeGpt2(
  shape: ModelConfig,
  vocab: number,
  seed: number,
): { model: HfGpt2LM; trained: TrainedTokenizer } {
  const trained = trainByteLevelBpe(loadCorpusSplit().train, vocab, shape.contextLength);
  const tokenizer = hfTokenizer(
    { tokenizer: trained.tokenizer, tokenizerConfig: trained.tokenizerConfig },
    { source: `BPE trained on the corpus (${vocab} ids)` },
  );
  const config: HfGpt2Config = {
    ...(shape as Omit<HfGpt2Config, "kind" | "bosTokenId" | "eosTokenIds">),
    vocabSize: vocab,
    kind: "hf-gpt2",
    bosTokenId: trained.endOfText,
    eosTokenIds: [trained.endOfText],
  };
  return { model: new HfGpt2LM(config, seed, { tokenizer }), trained };
}

/** A GPT-2 directory to continue pre-training (`--from`), with its tokenizer files and record. */
async function continuedGpt2(
  dir: string,
): Promise<{ model: HfGpt2LM; trained: TrainedTokenizer; record: unknown }> {
  const read = (f: string): Record<string, unknown> | undefined => {
    const file = path.join(dir, f);
    return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>) : undefined;
  };
  const { model } = await loadHfModel(dir);
  const tokenizer = read("tokenizer.json");
  if (!(model instanceof HfGpt2LM) || model.tokenizer === undefined || tokenizer === undefined) {
    model.dispose();
    throw new ConfigError(`--from ${dir}: must be a GPT-2 model directory with its tokenizer.json`);
  }
  const trained = {
    tokenizer,
    tokenizerConfig: read("tokenizer_config.json") ?? {},
    endOfText: model.tokenizer.eos[0] as number,
  };
  return { model, trained, record: read("pretrain.json") ?? { dir: path.resolve(dir) } };
}

/** What `rlaif pretrain` does (its command line is declared in specs.ts). */
export const pretrainCommand: CommandRun = {
  async run({ config, flags }) {
    const out = flags.out;
    if (typeof out !== "string" || !out) throw new ConfigError("--out <file.safetensors> is required");
    for (const f of NUMBER_FLAGS) if (flags[f] === "") throw new ConfigError(`--${f} needs a value`);
    const lr = flags.lr === undefined ? 0.003 : Number(flags.lr);
    if (!(lr > 0 && lr <= 1)) throw new ConfigError(`--lr must be in (0, 1], got "${String(flags.lr)}"`);
    const kind = flags.model === undefined ? "transformer" : String(flags.model);
    if (kind !== "transformer" && kind !== "gru" && kind !== "lstm" && kind !== "seq2seq") {
      throw new ConfigError(`--model must be transformer, gru, lstm or seq2seq, got "${kind}"`);
    }
    const from = typeof flags.from === "string" && flags.from !== "" ? flags.from : undefined;
    if (from !== undefined) {
      const shaped = ["vocab", "context", "d-model", "hidden", "layers", "heads", "model"].filter(
        (f) => flags[f] !== undefined,
      );
      if (shaped.length > 0)
        throw new ConfigError(`--from continues a model of a given shape: drop --${shaped.join(", --")}`);
    }
    const vocab = flags.vocab === undefined ? undefined : intFlag(flags, "vocab", 0, MIN_BPE_VOCAB, 30_000);
    if (vocab !== undefined && kind !== "transformer")
      throw new ConfigError("--vocab (a BPE tokenizer) applies to --model transformer only");
    const dirFlag = from !== undefined ? "--from" : vocab !== undefined ? "--vocab" : undefined;
    if (dirFlag && out.endsWith(".safetensors"))
      throw new ConfigError(`${dirFlag} writes a Hugging Face model directory: --out must name a directory`);
    if (kind === "transformer" && flags.hidden !== undefined) {
      throw new ConfigError("--hidden applies to --model gru|lstm|seq2seq only");
    }
    // seq2seq: a GRU encoder and decoder, sized like the RNNs (its own defaults)
    const rnnDefaults = kind === "seq2seq" ? DEFAULT_SEQ2SEQ_CONFIG : DEFAULT_RNN_CONFIG;
    if (kind !== "transformer" && flags.heads !== undefined) {
      throw new ConfigError("--heads applies to --model transformer only");
    }
    const model: ModelConfig =
      kind === "transformer"
        ? validateModelConfig(kind, {
            vocabSize: DEFAULT_CONFIG.vocabSize,
            contextLength: intFlag(flags, "context", DEFAULT_CONFIG.contextLength, 8, 4096),
            dModel: intFlag(flags, "d-model", DEFAULT_CONFIG.dModel, 8, 8192),
            nLayers: intFlag(flags, "layers", DEFAULT_CONFIG.nLayers, 1, 128),
            nHeads: intFlag(flags, "heads", DEFAULT_CONFIG.nHeads, 1, 128),
          })
        : validateModelConfig(kind, {
            kind,
            vocabSize: rnnDefaults.vocabSize,
            contextLength: intFlag(flags, "context", rnnDefaults.contextLength, 8, 4096),
            dModel: intFlag(flags, "d-model", rnnDefaults.dModel, 8, 8192),
            hidden: intFlag(flags, "hidden", rnnDefaults.hidden, 8, 8192),
            nLayers: intFlag(flags, "layers", rnnDefaults.nLayers, 1, 128),
          });
    const steps = intFlag(flags, "steps", 1000, 1, 10_000_000);
    const batchSize = intFlag(flags, "batch", 16, 1, 4096);
    const seed = intFlag(flags, "seed", 1, 0, 2 ** 32 - 1);
    const samples = intFlag(flags, "samples", 6, 0, 1000);
    const backend = await startBackend(config.services.backend);
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const bpe = from
      ? await continuedGpt2(from)
      : vocab === undefined
        ? undefined
        : { ...bpeGpt2(model, vocab, seed), record: undefined };
    if (bpe) log(`tokenizer: ${bpe.model.tokenizer?.describe()}`);
    const shape = bpe?.model.config ?? model;
    log(
      `backend=${backend} model=${bpe ? "hf-gpt2" : kind} config=${JSON.stringify(shape)} params=${countModelParameters(shape)}`,
    );
    log(`steps=${steps} batch=${batchSize}x${shape.contextLength} lr=${lr} seed=${seed}`);

    const started = performance.now();
    let last: PretrainLog | undefined;
    let evalLog: PretrainLog | undefined;
    const trained = await pretrain({
      config: shape,
      ...(bpe ? { model: bpe.model } : {}),
      steps,
      batchSize,
      lr,
      seed,
      evalEvery: intFlag(flags, "eval-every", 100, 1, 10_000_000),
      onLog: (e) => {
        last = e;
        if (e.heldOutBpb !== undefined) evalLog = e;
        if ((e.step + 1) % 10 === 0 || e.heldOutBpb !== undefined) {
          const target =
            e.heldOutTargetBpb === undefined ? "" : ` continuation bpb ${e.heldOutTargetBpb.toFixed(4)}`;
          const held =
            e.heldOutBpb === undefined
              ? ""
              : ` held-out loss ${e.heldOutLoss?.toFixed(4)} perplexity ${e.heldOutPerplexity?.toFixed(2)} bpb ${e.heldOutBpb.toFixed(4)}${target}`;
          log(
            `step ${e.step + 1}/${steps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.stepMs.toFixed(0)} ms${held}`,
          );
        }
      },
    });
    const wallSeconds = (performance.now() - started) / 1000;
    const numbers = {
      step: String(steps),
      backend,
      seed: String(seed),
      batchSize: String(batchSize),
      lr: String(lr),
      finalTrainLoss: String(last?.loss ?? ""),
      heldOutLoss: String(evalLog?.heldOutLoss ?? ""),
      heldOutBpb: String(evalLog?.heldOutBpb ?? ""),
      ...(evalLog?.heldOutTargetBpb === undefined
        ? {}
        : { heldOutContinuationBpb: String(evalLog.heldOutTargetBpb) }),
      wallSeconds: wallSeconds.toFixed(1),
      producedBy: "rlaif pretrain",
    };
    if (bpe) {
      const { tokenizer, tokenizerConfig } = bpe.trained;
      const pretrained = {
        ...numbers,
        heldOutPerplexity: String(evalLog?.heldOutPerplexity ?? ""),
        ...(bpe.record === undefined ? {} : { continuedFrom: bpe.record }),
      };
      await writeGpt2Dir(out, bpe.model, {
        tokenizer,
        tokenizerConfig,
        extra: { "pretrain.json": pretrained },
      });
    } else await saveCheckpoint(out, checkpointFromModel(trained, numbers));
    log(
      `wrote ${out} after ${wallSeconds.toFixed(1)} s; held-out bpb ${evalLog?.heldOutBpb?.toFixed(4)}, perplexity ${evalLog?.heldOutPerplexity?.toFixed(2)}`,
    );
    if (samples > 0) {
      const prompts = heldOutPrompts(samples, seed);
      const tok = tokenizerOf(trained);
      const outs = await generate(
        trained,
        prompts.map((p) => tok.encode(p)),
        { maxNewTokens: model.contextLength, temperature: 0.8, topK: 0, topP: 0.95, seed, stopAtEos: true },
      );
      outs.forEach((o, i) => {
        log(
          `sample ${i}: ${JSON.stringify(prompts[i])} → ${JSON.stringify(tokensText(tok, o.tokens))} [${o.finishReason}]`,
        );
      });
    }
    trained.dispose();
  },
};
