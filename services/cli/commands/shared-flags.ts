/**
 * Groups of settings flags that several commands accept, so each command lists what it reads
 * without repeating the names.
 */
import { existsSync } from "node:fs";
import { ConfigError } from "../../core/src/errors.js";

/** Hyperparameters of a run. */
export const RUN_FLAGS = [
  "steps",
  "prompts-per-step",
  "samples-per-prompt",
  "lr",
  "gamma",
  "kl-coef",
  "entropy-coef",
  "max-grad-norm",
  "baseline-decay",
  "publish-every",
  "seed",
  "max-new-tokens",
  "temperature",
  "top-k",
  "top-p",
  "prompt",
] as const;

/** What the model services need. */
export const MODEL_FLAGS = ["checkpoint", "backend"] as const;

/** Timeouts of calls and steps. */
export const TIMEOUT_FLAGS = ["rpc-timeout-ms", "step-timeout-ms"] as const;

/** Fails with a message that says what to do when the checkpoint file is missing. */
export function requireCheckpoint(path: string): void {
  if (!existsSync(path)) {
    throw new ConfigError(
      `checkpoint ${path} does not exist: pass --checkpoint <file>, or make one with 'rlaif pretrain --out <file>'`,
    );
  }
}
