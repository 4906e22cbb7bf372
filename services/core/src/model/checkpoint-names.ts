/**
 * Every name a checkpoint file carries besides the parameters' own: the format marker, the
 * `__metadata__` keys, and the prefixes of the non-parameter tensors a resumable run checkpoint
 * holds (Adam's moments, the reference weights, the served weights).
 *
 * Why one module: these names are a file format. The model code writes and validates them, the
 * Optimizer writes and resumes from them, Python tooling reads them, and tests build files with
 * them; a name spelled in two places is a name that can drift between writer and reader.
 */
import type { WeightMap } from "./causal-lm.js";

/** Value of `__metadata__.format`, so a loader can tell our files from other safetensors files. */
export const CHECKPOINT_FORMAT = "rlaif-checkpoint-v1";

/** Metadata key of the format marker ({@link CHECKPOINT_FORMAT}). */
export const FORMAT_KEY = "format";
/** Metadata key of the model kind ("transformer", "gru", "lstm" or "seq2seq"). */
export const KIND_KEY = "kind";
/** Metadata key of the model config (JSON). */
export const CONFIG_KEY = "config";
/** Metadata key of the tokenizer description (JSON). */
export const TOKENIZER_KEY = "tokenizer";
/** Metadata key of a Hugging Face model's origin (hf-origin.ts), as JSON. */
export const ORIGIN_KEY = "origin";
/** The keys the encoder writes (origin only for Hugging Face kinds): callers may not set them. */
export const RESERVED_METADATA_KEYS: readonly string[] = [
  FORMAT_KEY,
  KIND_KEY,
  CONFIG_KEY,
  TOKENIZER_KEY,
  ORIGIN_KEY,
];

/** Metadata key of the training run's id (run checkpoints). */
export const RUN_ID_KEY = "runId";
/** Metadata key of the step the checkpoint was written after. */
export const STEP_KEY = "step";
/** Metadata key of the weights version the run had published. */
export const WEIGHTS_VERSION_KEY = "weightsVersion";
/** Metadata key of the run's settings (JSON RunSettings, prompts resolved). */
export const RUN_CONFIG_KEY = "runConfig";
/** Metadata key of the RNG state: `{scheme, seed, nextStep}`. */
export const RNG_STATE_KEY = "rngState";
/** Metadata key of the counters a summary needs: `{servedStep, trajectories, tokens, wallSeconds}`. */
export const RUN_PROGRESS_KEY = "runProgress";
/**
 * Metadata key of the trajectory ledger (JSON, services/optimizer/trajectory-ledger.ts): the
 * bus run id, the trajectory ids each step applied since the previous checkpoint, and the last
 * step whose jobs were out, so a resumed run can account for every sample a crash left in flight.
 */
export const TRAJECTORY_LEDGER_KEY = "trajectoryLedger";
/** Metadata key of the learner's state (baseline, β; JSON). */
export const LEARNER_STATE_KEY = "learnerState";
/** Metadata key of Adam's update count and hyperparameters (JSON). */
export const OPTIMIZER_STATE_KEY = "optimizer";

/**
 * Metadata key of a LoRA learner's adapter settings (JSON `{rank, alpha, dropout, targets}`),
 * beside its `lora.*` tensors: what rebuilds the tuned model from its base.
 */
export const LORA_SPEC_KEY = "lora";

/** Prefix of Adam's tensors: `optimizer.m.<param>` and `optimizer.v.<param>`. */
export const ADAM_TENSOR_PREFIX = "optimizer.";
/** Prefix of Adam's first moments, `optimizer.m.<param>`. */
export const ADAM_M_PREFIX = `${ADAM_TENSOR_PREFIX}m.`;
/** Prefix of Adam's second moments, `optimizer.v.<param>`. */
export const ADAM_V_PREFIX = `${ADAM_TENSOR_PREFIX}v.`;
/** Prefix of the run's frozen reference weights, `reference.<param>` (the KL is measured against them). */
export const REFERENCE_TENSOR_PREFIX = "reference.";
/**
 * Prefix of the weights the Policy replicas serve, `published.<param>`, stored only when they
 * differ from the learner's (publishEvery > 1).
 */
export const PUBLISHED_TENSOR_PREFIX = "published.";

/** Prefix of a LoRA run's adapter tensors, `lora.<layer>.lora_A.weight` (the base stays as parameters). */
export const LORA_TENSOR_PREFIX = "lora.";

/**
 * Name prefixes of non-parameter tensors. Decoding returns such tensors apart from the
 * parameters and models are built from the parameters only, so a run checkpoint loads wherever a
 * weights file does.
 */
export const STATE_TENSOR_PREFIXES: readonly string[] = [
  ADAM_TENSOR_PREFIX,
  REFERENCE_TENSOR_PREFIX,
  PUBLISHED_TENSOR_PREFIX,
  LORA_TENSOR_PREFIX,
];

/** Whether `name` is a non-parameter tensor's (it starts with a {@link STATE_TENSOR_PREFIXES} prefix). */
export function isStateTensor(name: string): boolean {
  return STATE_TENSOR_PREFIXES.some((p) => name.startsWith(p));
}

/** `weights` renamed `<prefix><name>`: how a whole set of weights travels as state tensors. */
export function prefixTensors(prefix: string, weights: WeightMap): WeightMap {
  return new Map([...weights].map(([name, w]) => [`${prefix}${name}`, w]));
}

/** The tensors named `<prefix><name>`, renamed back to `<name>` (the inverse of {@link prefixTensors}). */
export function unprefixTensors(prefix: string, tensors: WeightMap): WeightMap {
  return new Map(
    [...tensors]
      .filter(([name]) => name.startsWith(prefix))
      .map(([name, w]) => [name.slice(prefix.length), w]),
  );
}
