/** `rlaif export`: a checkpoint as a model directory (see hf-export.ts). */
import { existsSync } from "node:fs";
import { ConfigError } from "../../core/src/errors.js";
import { startBackend } from "../../core/src/model/backend.js";
import { loadCheckpoint } from "../../core/src/model/checkpoint.js";
import { exportCheckpoint } from "../../core/src/model/hf-export.js";
import { hasAdapters } from "../../core/src/model/lora-checkpoint.js";
import type { CommandRun } from "../args.js";

/** What `rlaif export` does (its command line is declared in specs.ts). */
export const exportCommand: CommandRun = {
  async run({ config, flags }) {
    const out = flags.out;
    if (typeof out !== "string" || !out)
      throw new ConfigError("--out <dir> is required (the directory to write)");
    const file = config.services.checkpoint;
    if (!existsSync(file))
      throw new ConfigError(
        `--checkpoint ${file} does not exist: pass a run's final.safetensors or step-<n>.safetensors`,
      );
    const c = await loadCheckpoint(file);
    // Merging a LoRA run's adapters builds the model, which needs a compute backend.
    if (hasAdapters(c)) await startBackend(config.services.backend);
    const r = await exportCheckpoint(c, out);
    process.stdout.write(
      `rlaif export: ${c.kind} model → ${out} (${r.files.join(", ")}; ${r.dtypes.join("/")})\n`,
    );
  },
};
