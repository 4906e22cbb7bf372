/**
 * Resume through the two front doors: StartRun with `resume_from` over gRPC (in the same
 * Optimizer and bus that ran the crashed attempt, so job and trajectory ids must not collide in
 * the de-duplication window) and `rlaif train --resume` on the command line. Bad input is refused
 * with INVALID_ARGUMENT naming the field, or exit code 2 naming the flag.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { runConfigFromSettings } from "../services/core/src/config/run-config.js";
import type { RlaifConfig } from "../services/core/src/config/settings.js";
import { RpcError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import {
  checkpointFromModel,
  loadCheckpoint,
  saveCheckpoint,
} from "../services/core/src/model/checkpoint.js";
import { prefixTensors, REFERENCE_TENSOR_PREFIX } from "../services/core/src/model/checkpoint-names.js";
import { createTransformer } from "../services/core/src/model/transformer.js";
import { OptimizerService } from "../services/optimizer/optimizer-service.js";
import { checkpointFileName } from "../services/optimizer/run-checkpoint.js";
import { differingTensors, tensorBytes } from "./helpers/resume-runs.js";
import { TINY_MODEL, tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const BIN = join(import.meta.dirname, "..", "bin", "rlaif.js");

function rlaif(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function metricSteps(dir: string): number[] {
  return readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => Number(JSON.parse(l).step));
}

async function invalid(call: Promise<unknown>, field: string, reason: RegExp): Promise<void> {
  const err = (await call.then(
    () => null,
    (e: unknown) => e,
  )) as RpcError;
  expect(err, "the call should fail").toBeInstanceOf(RpcError);
  expect(err.code, err.message).toBe(status.INVALID_ARGUMENT);
  expect(err.details.startsWith(`${field}: `), err.details).toBe(true);
  expect(err.details).toMatch(reason);
}

/** A checkpoint of a different model (d=16) on disk. */
async function otherModelCheckpoint(path: string): Promise<void> {
  const model = createTransformer({ ...TINY_MODEL, dModel: 16 }, 3);
  await saveCheckpoint(path, checkpointFromModel(model));
  model.dispose();
}

describe("optimizer resume api", () => {
  let start: string;
  let config: RlaifConfig;
  let cluster: EmbeddedCluster;
  let oc: ReturnType<typeof createClient<typeof OptimizerService>>;

  beforeAll(async () => {
    start = await writeTinyCheckpoint(9);
    config = tinyRunConfig(start, {
      steps: 4,
      checkpointEvery: 2,
      klTarget: 0.5,
      weightDecay: 0.01,
      seed: 4,
    });
    cluster = await startEmbeddedCluster(config);
    oc = createClient(OptimizerService, cluster.optimizer.server.address, { defaultTimeoutMs: 30_000 });
  });
  afterAll(async () => {
    oc?.close();
    await cluster?.close();
  });

  it("resume rpc - StartRun resume_from continues a crashed run in the same Optimizer to the uninterrupted weights", async () => {
    const runConfig = runConfigFromSettings(config.run);
    await oc.startRun({ config: runConfig, runId: "full" });
    expect(await cluster.optimizer.runs.get("full").done).not.toBeNull();
    await oc.startRun({ config: runConfig, runId: "crash" });
    const crashed = cluster.optimizer.runs.get("crash");
    crashed.watchers.add((m) => m && Number(m.step) === 3 && crashed.driver.cancel());
    expect(await crashed.done).toBeNull();
    expect((await oc.getStatus({ runId: "crash" })).state).toBe(RunState.FAILED);

    const res = await oc.startRun({ config: {}, resumeFrom: "crash" });
    expect(res).toMatchObject({ runId: "crash", resumedFromStep: 2 });
    expect(await cluster.optimizer.runs.get("crash").done).not.toBeNull();
    const st = await oc.getStatus({ runId: "crash" });
    expect([st.state, st.step]).toEqual([RunState.SUCCEEDED, 4]);
    const [full, dir] = [join(config.out, "full"), join(config.out, "crash")];
    expect(metricSteps(dir)).toEqual([1, 2, 3, 4]);
    const last = checkpointFileName(4);
    expect(differingTensors(await tensorBytes(join(full, last)), await tensorBytes(join(dir, last)))).toEqual(
      [],
    );
    const [ma, mb] = [
      (await loadCheckpoint(join(full, last))).metadata,
      (await loadCheckpoint(join(dir, last))).metadata,
    ];
    expect(mb.learnerState).toBe(ma.learnerState);
    expect(mb.optimizer).toBe(ma.optimizer);
    // Checkpoint RPC after the end writes the same resumable step file again.
    const cp = await oc.checkpoint({ runId: "crash" });
    expect(cp.path).toBe(join(dir, last));
    expect(cp.step).toBe(4);
  });

  // the learning rate the runs were started with (the default), as a regular expression
  const lrPattern = () => String(config.run.learningRate).replace(".", "\\.");

  it("resume rpc - bad resume requests are INVALID_ARGUMENT naming the field and the reason", async () => {
    const resume = (req: Record<string, unknown>) => oc.startRun({ config: {}, ...req });
    await invalid(resume({ resumeFrom: "nope" }), "resume_from", /nope does not exist/);
    await invalid(resume({ resumeFrom: "../etc" }), "resume_from", /inside the Optimizer's output directory/);
    await invalid(
      resume({ resumeFrom: "full/final.safetensors" }),
      "resume_from",
      /not a resumable checkpoint/,
    );
    await invalid(
      resume({ resumeFrom: "full", config: { learningRate: 0.5 } }),
      "config.learning_rate",
      new RegExp(`the run was started with ${lrPattern()}.*got 0\\.5`),
    );
    await invalid(
      resume({ resumeFrom: "full", config: { sampling: { temperature: 0.5 } } }),
      "config.sampling.temperature",
      /keeps its settings/,
    );
    await invalid(resume({ resumeFrom: "full" }), "config.steps", /the checkpoint is at step 4 of 4/);
    await invalid(resume({ resumeFrom: "full", runId: "other" }), "run_id", /checkpoint is of run "full"/);
    // A run of another model than this Optimizer's.
    const cp = await loadCheckpoint(join(config.out, "full", checkpointFileName(4)));
    mkdirSync(join(config.out, "other"));
    await otherModelCheckpoint(join(config.out, "other", "start.safetensors"));
    const other = await loadCheckpoint(join(config.out, "other", "start.safetensors"));
    const reference = prefixTensors(REFERENCE_TENSOR_PREFIX, other.weights);
    await saveCheckpoint(join(config.out, "other", checkpointFileName(1)), {
      ...other,
      metadata: {
        ...cp.metadata,
        runId: "other",
        step: "1",
        // The ledger is of the checkpoint's step too (a ledger of another step is refused).
        trajectoryLedger: JSON.stringify({
          busRunId: "other",
          step: 1,
          sinceStep: 0,
          applied: {},
          queuedThrough: 1,
        }),
      },
      state: reference,
    });
    await invalid(resume({ resumeFrom: "other" }), "resume_from", /trains a transformer .*"dModel":16/);
  });

  it("resume cli - train --resume refuses bad input with exit 2 and a what-to-fix message", async () => {
    const full = join(config.out, "full");
    const other = join(config.out, "cli-other.safetensors");
    await otherModelCheckpoint(other);
    for (const [args, message] of [
      [
        ["--resume", join(config.out, "missing")],
        /--resume: .*missing does not exist — pass a run directory/,
      ],
      [["--resume", join(full, "final.safetensors")], /--resume: .*not a resumable checkpoint/],
      [["--resume", start], /--resume: .*not a resumable checkpoint/],
      [
        ["--resume", full, "--lr", "0.5"],
        new RegExp(`--lr: the run was started with ${lrPattern()}, got 0\\.5`),
      ],
      [["--resume", full], /--steps: the checkpoint is at step 4 of 4: set a larger total/],
      [
        ["--resume", full, "--steps", "5", "--checkpoint", other],
        /--checkpoint: the run trains a transformer/,
      ],
    ] as const) {
      const r = rlaif("train", ...args);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    }
  }, 180_000);

  it("resume cli - train --resume <run dir> --steps 5 continues a finished run in place", () => {
    const full = join(config.out, "full");
    const r = rlaif("train", "--resume", full, "--steps", "5", "--backend", "wasm", "--json");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/resuming full at step 4 of 5 steps/);
    const summary = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(summary).toMatchObject({ runId: "full", steps: 5, trajectories: 5 * 4 * 2 });
    expect(metricSteps(full)).toEqual([1, 2, 3, 4, 5]);
    expect(summary.checkpointPath).toBe(join(full, "final.safetensors"));
  });
});
