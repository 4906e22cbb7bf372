/** Checks several commands share. */
import { existsSync } from "node:fs";
import { ConfigError } from "../../core/src/errors.js";

/** Fails with a message that says what to do when the checkpoint file is missing. */
export function requireCheckpoint(path: string): void {
  if (!existsSync(path)) {
    throw new ConfigError(
      `checkpoint ${path} does not exist: pass --checkpoint <file>, or make one with 'rlaif pretrain --out <file>'`,
    );
  }
}
