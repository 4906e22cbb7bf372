/**
 * The Optimizer's learner in its own worker thread (optimizer/learner-thread.ts): a run trains to
 * bitwise the same weights with the learner in its thread as on the main thread, a learner that
 * cannot load fails with the thread's own typed error, calls after dispose() reject instead of
 * hanging, and with maxStaleness 1 an overlapped run is reproducible — two runs end bitwise
 * equal, and every step after the first trains on samples of exactly the version before.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { CheckpointError, WorkerThreadError } from "../services/core/src/errors.js";
import { ThreadLearner } from "../services/optimizer/learner-thread.js";
import { differingTensors, runToEnd, tensorBytes } from "./helpers/resume-runs.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

/** Every step's sample staleness, from a run directory's metrics.jsonl. */
async function staleness(dir: string): Promise<number[]> {
  return (await readFile(join(dir, "metrics.jsonl"), "utf8"))
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { sampleStaleness?: number }).sampleStaleness ?? 0);
}

describe("learner thread", () => {
  let checkpoint: string;
  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint(3);
  });

  it("learner thread - a run trains to bitwise the same weights with the learner in its thread as on the main thread", async () => {
    const finals: string[] = [];
    for (const learnerIn of ["thread", "main"] as const) {
      const config = tinyRunConfig(checkpoint, { steps: 3 });
      config.services.learnerIn = learnerIn;
      finals.push(join(await runToEnd(config), "final.safetensors"));
    }
    const [a, b] = await Promise.all(finals.map(tensorBytes));
    expect(a && b && differingTensors(a, b)).toEqual([]);
  });

  it("learner thread - a learner that cannot load fails with the thread's CheckpointError", async () => {
    const err = await ThreadLearner.start({
      checkpoint: "/nonexistent/model.safetensors",
      settings: defaultConfig().run,
      resume: false,
      backend: "wasm",
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toMatch(/cannot read checkpoint \/nonexistent\/model\.safetensors/);
  });

  it("learner thread - weights come back from the thread; after dispose() calls reject with WorkerThreadError", async () => {
    const learner = await ThreadLearner.start({
      checkpoint,
      settings: defaultConfig().run,
      resume: false,
      backend: "wasm",
    });
    expect(learner.modelKind).toBe("transformer");
    const blob = await learner.weightsBlob();
    expect(blob.byteLength).toBeGreaterThan(1000);
    learner.dispose();
    await expect(learner.weightsBlob()).rejects.toBeInstanceOf(WorkerThreadError);
  });

  it("learner thread - with maxStaleness 1 two runs end bitwise equal, each step after the first on samples exactly one version old", async () => {
    const dirs: string[] = [];
    for (let i = 0; i < 2; i++) {
      dirs.push(
        await runToEnd(tinyRunConfig(checkpoint, { steps: 4, maxStaleness: 1, offPolicy: "ppo-clip" })),
      );
    }
    for (const dir of dirs) expect(await staleness(dir)).toEqual([0, 1, 1, 1]);
    const [a, b] = await Promise.all(dirs.map((d) => tensorBytes(join(d, "final.safetensors"))));
    expect(a && b && differingTensors(a, b)).toEqual([]);
  });
});
