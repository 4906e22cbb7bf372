/**
 * A run's provenance (run-files.ts RunProvenance): what the Optimizer knows about where a run's
 * weights, scores and software came from, gathered when the run starts and completed with the
 * scorers its trajectories name. Why: a config.json with only hyperparameters cannot tell two
 * runs of different checkpoints or scorer versions apart.
 */
import { readFileSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { sha256Hex } from "../core/src/hash.js";
import { RLAIF_VERSION } from "../core/src/version.js";
import type { Learner } from "./run-driver.js";
import { CONFIG_FILE, type RunProvenance, type ScorerIdentity } from "./run-files.js";

/** What an Optimizer process knows about its surroundings, fixed for all its runs. */
export interface ProvenanceContext {
  /** Checkpoint new runs start from. */
  checkpoint: string;
  /** Compute backend in use. */
  backend: string;
  /** "embedded" or the NATS URL. */
  bus: string;
  /** "embedded" or "distributed". */
  mode: string;
  /** FeedbackService address, "" when only the Rollout workers know it. */
  feedbackAddress: string;
  /** Whether that is the built-in rule scorer started in this process (on a loopback port). */
  feedbackInProcess: boolean;
}

/**
 * A checkpoint file's path and SHA-256; for a Hugging Face model directory, the SHA-256 of its
 * files' names and hashes (sorted), so a changed weight or tokenizer file changes it too. Also
 * what a run restarted from step 0 checks its starting weights against (run-restart.ts).
 */
export async function fileRef(path: string): Promise<{ path: string; sha256: string }> {
  const abs = resolve(path);
  if (!(await stat(abs)).isDirectory()) return { path: abs, sha256: sha256Hex(await readFile(abs)) };
  const lines: string[] = [];
  for (const name of (await readdir(abs)).sort()) {
    const file = join(abs, name);
    if ((await stat(file)).isFile()) lines.push(`${sha256Hex(await readFile(file))}  ${name}`);
  }
  return { path: abs, sha256: sha256Hex(new TextEncoder().encode(lines.join("\n"))) };
}

/** The provenance an earlier attempt of a run recorded in its directory, if any. */
function earlierProvenance(dir: string): RunProvenance | undefined {
  try {
    const doc = JSON.parse(readFileSync(join(dir, CONFIG_FILE), "utf8")) as { provenance?: RunProvenance };
    return doc.provenance;
  } catch {
    return undefined;
  }
}

/**
 * The provenance of a run starting now. A resumed run (`resume`: its checkpoint and step, `dir`
 * its directory) keeps the model and scorers its first attempt recorded, and adds where it
 * resumed from.
 */
export async function runProvenance(
  ctx: ProvenanceContext,
  dir: string,
  resume?: { path: string; step: number },
): Promise<RunProvenance> {
  const earlier = resume ? earlierProvenance(dir) : undefined;
  const resumedFrom = resume ? { ...(await fileRef(resume.path)), step: resume.step } : undefined;
  return {
    rlaif: RLAIF_VERSION,
    model: earlier?.model ?? (await fileRef(resume ? resume.path : ctx.checkpoint)),
    ...(resumedFrom ? { resumedFrom } : {}),
    backend: ctx.backend,
    bus: ctx.bus,
    mode: ctx.mode,
    feedback: {
      address: ctx.feedbackAddress,
      inProcess: ctx.feedbackInProcess,
      scorers: [...(earlier?.feedback?.scorers ?? [])],
    },
  };
}

/**
 * Add the scorers of `trajectories` that `scorers` lacks; true when one was added (the caller
 * then rewrites config.json). Trajectories without a scorer id (failed scoring) are skipped.
 */
export function noteScorers(scorers: ScorerIdentity[], trajectories: readonly Trajectory[]): boolean {
  let added = false;
  for (const t of trajectories) {
    if (!t.scorerId) continue;
    if (scorers.some((s) => s.id === t.scorerId && s.version === t.scorerVersion)) continue;
    scorers.push({ id: t.scorerId, version: t.scorerVersion });
    added = true;
  }
  return added;
}

/**
 * The learner, noting in `provenance` the scorers of the trajectories of each update before it
 * runs, and calling `changed` when one was new (the caller rewrites config.json). A proxy, so
 * the learner's other members pass through whatever they are.
 */
export function recordScorers(learner: Learner, provenance: RunProvenance, changed: () => void): Learner {
  return new Proxy(learner, {
    get(target, key) {
      if (key === "step") {
        return (trajectories: Parameters<Learner["step"]>[0]) => {
          if (noteScorers(provenance.feedback.scorers, trajectories)) changed();
          return target.step(trajectories);
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
