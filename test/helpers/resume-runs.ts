/**
 * Test helpers for resumable runs: run an embedded cluster to the end, "crash" a run after a
 * step (cancel it and drop the cluster, learner and bus), resume it in a fresh cluster, and read
 * a checkpoint's tensors as raw bytes for bitwise comparisons.
 */
import { startEmbeddedCluster } from "../../services/cluster/embedded-cluster.js";
import type { RlaifConfig, RunSettings } from "../../services/core/src/config/settings.js";
import { loadCheckpoint } from "../../services/core/src/model/checkpoint.js";
import { resumeSettings } from "../../services/optimizer/resume-settings.js";
import { openResumeCheckpoint } from "../../services/optimizer/run-checkpoint.js";

/** Run `config.run` to the end in a fresh embedded cluster; resolves with the run directory. */
export async function runToEnd(config: RlaifConfig): Promise<string> {
  const cluster = await startEmbeddedCluster(config);
  try {
    const run = await cluster.optimizer.runs.start(config.run);
    const summary = await run.done;
    if (!summary) throw new Error(`run failed: ${run.error}`);
    return run.dir;
  } finally {
    await cluster.close();
  }
}

/**
 * Start `config.run`, cancel it once step `crashAfter` is done, and tear everything down (the
 * learner, its Adam state and the in-memory bus are gone): a crash, as far as the run can tell.
 */
export async function runAndCrash(config: RlaifConfig, crashAfter: number): Promise<string> {
  const cluster = await startEmbeddedCluster(config);
  try {
    const run = await cluster.optimizer.runs.start(config.run);
    run.watchers.add((m) => {
      if (m && Number(m.step) === crashAfter) run.driver.cancel();
    });
    if (await run.done) throw new Error("the run was expected to stop early");
    return run.dir;
  } finally {
    await cluster.close();
  }
}

/**
 * Resume the run in `from` (directory or file) in a fresh cluster, with `changes` to its saved
 * settings (only steps and checkpointing may change), and run it to the end.
 */
export async function resumeToEnd(
  config: RlaifConfig,
  from: string,
  changes: Partial<RunSettings> = {},
): Promise<{ dir: string; step: number }> {
  const checkpoint = await openResumeCheckpoint(from);
  const settings = resumeSettings(checkpoint.settings, changes, checkpoint.step, String);
  const cluster = await startEmbeddedCluster({
    ...config,
    services: { ...config.services, checkpoint: checkpoint.path },
  });
  try {
    const run = await cluster.optimizer.runs.resume(checkpoint, settings);
    const summary = await run.done;
    if (!summary) throw new Error(`resumed run failed: ${run.error}`);
    return { dir: run.dir, step: checkpoint.step };
  } finally {
    await cluster.close();
  }
}

/** Every tensor of a checkpoint file (parameters and state) as raw little-endian bytes. */
export async function tensorBytes(path: string): Promise<Map<string, Buffer>> {
  const c = await loadCheckpoint(path);
  const out = new Map<string, Buffer>();
  for (const [name, w] of [...c.weights, ...c.state]) {
    out.set(name, Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength));
  }
  return out;
}

/** Names of the tensors whose bytes differ between two checkpoints (or exist in only one). */
export function differingTensors(a: Map<string, Buffer>, b: Map<string, Buffer>): string[] {
  const names = new Set([...a.keys(), ...b.keys()]);
  return [...names].filter((n) => {
    const x = a.get(n);
    const y = b.get(n);
    return !x || !y || !x.equals(y);
  });
}
