/**
 * The fault tests' cluster: a real nats-server with a file store and the four services as
 * `bin/rlaif.js serve <service>` processes on fixed loopback ports, each of which a test can
 * kill -9 and restart on the same port (nats-server on the same store). `faultScenario` runs a
 * short training run, kills one of them while the Rollout holds unacked jobs, restarts it, and
 * tallies what the Optimizer applied from its per-step "applied" log lines.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import {
  type GetStatusResponse,
  OptimizerService,
  RunState,
} from "../../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { freePort } from "../../services/core/src/bus/nats-server.js";
import { ROLLOUT_CONSUMER, subjectsFor } from "../../services/core/src/bus/subjects.js";
import { runConfigFromSettings } from "../../services/core/src/config/run-config.js";
import { defaultConfig, REPO_ROOT } from "../../services/core/src/config/settings.js";
import { createClient } from "../../services/core/src/grpc/client.js";
import { initBackend } from "../../services/core/src/model/backend.js";
import { loadCheckpoint, modelFromCheckpoint } from "../../services/core/src/model/checkpoint.js";
import { Restartable } from "./restartable.js";
import { RLAIF_BIN } from "./spawn-rlaif.js";

/** The small byte-level Transformer the fault runs train. */
export const FAULT_CHECKPOINT = join(REPO_ROOT, "checkpoints", "transformer", "model.safetensors");

/** The run every fault scenario trains: 6 steps × 4 prompts × 4 samples × 8 new tokens. */
export const FAULT_RUN = { steps: 6, promptsPerStep: 4, samplesPerPrompt: 4, maxNewTokens: 8 } as const;

/** The processes a scenario may kill. */
export type FaultTarget = "rollout" | "policy" | "feedback" | "nats";

/** The running processes. */
export interface FaultCluster {
  natsUrl: string;
  /** host:port of the Optimizer's API. */
  optimizerAddress: string;
  out: string;
  procs: Record<FaultTarget | "optimizer", Restartable>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Start nats-server (file store), then Feedback and Policy, then Rollout and Optimizer. */
export async function startFaultCluster(): Promise<FaultCluster> {
  const store = mkdtempSync(join(tmpdir(), "rlaif-fault-nats-"));
  const out = mkdtempSync(join(tmpdir(), "rlaif-fault-runs-"));
  const [natsPort, fb, pol, ro, opt] = await Promise.all(Array.from({ length: 5 }, () => freePort()));
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  const nats = new Restartable(
    "nats-server",
    "nats-server",
    ["-a", "127.0.0.1", "-p", String(natsPort), "-js", "-sd", store],
    /Server is ready/,
  );
  const serve = (name: string, port: number, args: string[]) =>
    new Restartable(
      name,
      process.execPath,
      [RLAIF_BIN, "serve", name, "--port", String(port), "--host", "127.0.0.1", ...args],
      /listening on/,
    );
  const model = ["--checkpoint", FAULT_CHECKPOINT, "--backend", "wasm"];
  const feedbackAddress = `127.0.0.1:${fb}`;
  const procs = {
    nats,
    feedback: serve("feedback", fb, []),
    policy: serve("policy", pol, ["--nats", natsUrl, ...model]),
    rollout: serve("rollout", ro, [
      ...["--nats", natsUrl, "--policy-address", `127.0.0.1:${pol}`],
      ...["--feedback-address", feedbackAddress, "--rpc-timeout-ms", "20000"],
    ]),
    optimizer: serve("optimizer", opt, [
      ...["--nats", natsUrl, ...model, "--out", out],
      ...["--step-timeout-ms", "150000", "--feedback-address", feedbackAddress],
    ]),
  };
  const close = async () => {
    for (const p of [procs.optimizer, procs.rollout, procs.policy, procs.feedback, nats]) await p.stop();
  };
  try {
    await nats.start(15_000);
    await Promise.all([procs.feedback.start(), procs.policy.start()]);
    await Promise.all([procs.rollout.start(), procs.optimizer.start()]);
  } catch (err) {
    await close();
    throw err;
  }
  return { natsUrl, optimizerAddress: `127.0.0.1:${opt}`, out, procs, close };
}

/** What the Optimizer applied, by sample: "delivered X/N, applied twice Y, lost Z". */
export interface Tally {
  delivered: number;
  expected: number;
  twice: number;
  lost: number;
  line: string;
}

/**
 * Count the samples of the Optimizer's "optimizer: step S applied k of m: p.s,…" lines: each
 * (step, prompt, sample) of the run should appear exactly once.
 */
export function tallyApplied(lines: readonly string[], run: typeof FAULT_RUN): Tally {
  const seen = new Map<string, number>();
  for (const line of lines) {
    const m = /optimizer: step (\d+) applied \d+ of \d+: (.*)$/.exec(line);
    if (!m) continue;
    for (const ps of (m[2] as string).split(",").filter(Boolean)) {
      const key = `${m[1]}.${ps}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
  }
  const expected = run.steps * run.promptsPerStep * run.samplesPerPrompt;
  let delivered = 0;
  for (let step = 1; step <= run.steps; step++)
    for (let p = 0; p < run.promptsPerStep; p++)
      for (let s = 0; s < run.samplesPerPrompt; s++) if (seen.has(`${step}.${p}.${s}`)) delivered++;
  const twice = [...seen.values()].reduce((sum, n) => sum + Math.max(0, n - 1), 0);
  const lost = expected - delivered;
  return {
    delivered,
    expected,
    twice,
    lost,
    line: `delivered ${delivered}/${expected}, applied twice ${twice}, lost ${lost}`,
  };
}

/** Resolve once the Rollout holds unacked jobs (the jobs consumer's ack-pending count is > 0). */
async function untilJobsHeld(natsUrl: string, timeoutMs: number): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    const stream = subjectsFor().queues.jobs.stream;
    const deadline = Date.now() + timeoutMs;
    while ((await jsm.consumers.info(stream, ROLLOUT_CONSUMER)).num_ack_pending === 0) {
      if (Date.now() > deadline) throw new Error(`the Rollout held no jobs within ${timeoutMs} ms`);
      await sleep(20);
    }
  } finally {
    await nc.close();
  }
}

/** How a scenario ended. */
export interface ScenarioResult {
  status: GetStatusResponse;
  tally: Tally;
  finalCheckpoint: string;
  cluster: FaultCluster;
}

/**
 * Train FAULT_RUN; once step `afterStep` is done and the Rollout holds jobs, kill -9 `target`,
 * wait `downMs`, start it again, and wait for the run to end. Prints the tally line.
 */
export async function faultScenario(
  cluster: FaultCluster,
  target: FaultTarget,
  opts: { afterStep?: number; downMs?: number } = {},
): Promise<ScenarioResult> {
  const optimizer = createClient(OptimizerService, cluster.optimizerAddress, { defaultTimeoutMs: 10_000 });
  try {
    const settings = { ...defaultConfig().run, ...FAULT_RUN };
    settings.prompts = ["The film was", "I think that", "She said", "It is a"];
    const { runId } = await optimizer.startRun({ config: runConfigFromSettings(settings) });
    const until = async (ok: (s: GetStatusResponse) => boolean, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await optimizer.getStatus({ runId });
        if (ok(s)) return s;
        if (s.state === RunState.FAILED) return s;
        if (Date.now() > deadline) throw new Error(`run ${runId} stuck at step ${s.step} (state ${s.state})`);
        await sleep(200);
      }
    };
    await until((s) => s.step >= (opts.afterStep ?? 2), 120_000);
    await untilJobsHeld(cluster.natsUrl, 30_000);
    const victim = cluster.procs[target];
    await victim.kill9();
    await sleep(opts.downMs ?? 5_000);
    await victim.start();
    const status = await until((s) => s.state === RunState.SUCCEEDED, 240_000);
    const tally = tallyApplied(cluster.procs.optimizer.lines, FAULT_RUN);
    console.log(`fault(kill -9 ${target}): ${tally.line}`);
    return { status, tally, finalCheckpoint: join(cluster.out, runId, "final.safetensors"), cluster };
  } finally {
    optimizer.close();
  }
}

/**
 * Load a checkpoint into a model (throws if it cannot be read or does not fit its config) and
 * count its parameters and the non-finite ones among them.
 */
export async function loadModel(file: string): Promise<{ params: number; nonFinite: number }> {
  await initBackend("wasm");
  const model = modelFromCheckpoint(await loadCheckpoint(file));
  let params = 0;
  let nonFinite = 0;
  for (const w of model.getWeights().values()) {
    params += w.data.length;
    for (const v of w.data) if (!Number.isFinite(v)) nonFinite++;
  }
  model.dispose();
  return { params, nonFinite };
}
