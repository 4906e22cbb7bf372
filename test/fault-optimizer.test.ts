/**
 * Faults of `rlaif up`'s cluster, with real processes and a real nats-server on the small
 * byte-level Transformer: the Optimizer killed mid-run (SIGKILL, or SIGTERM: a drain) is restarted on its port,
 * resumes the run from its last checkpoint by itself (or, killed before the first, starts it over from step 0), and the client follows the same run to
 * its end with every trajectory applied once; SIGTERM to `rlaif up` drains every service (each
 * exits 0) and leaves no process behind.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { clusterRejoin } from "../services/cli/commands/up.js";
import { followRun } from "../services/cli/follow-run.js";
import type { ProgressReporter } from "../services/cli/progress.js";
import { connectOptimizer, startRemoteRun } from "../services/cli/remote-run.js";
import { startLocalCluster } from "../services/cluster/local-cluster.js";
import { REPO_ROOT } from "../services/core/src/config/settings.js";
import { allGone } from "./helpers/process-alive.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { RLAIF_BIN } from "./helpers/spawn-rlaif.js";
import { tinyRunConfig } from "./helpers/tiny-model.js";

const hasNats = requireTool(TOOLS.natsServer);
const CHECKPOINT = join(REPO_ROOT, "checkpoints", "transformer", "model.safetensors");
const RUN = { promptsPerStep: 2, samplesPerPrompt: 2, maxNewTokens: 8 };

/** Per step, how many lines metrics.jsonl has and how many trajectories they applied. */
function appliedPerStep(dir: string): Map<number, { lines: number; trajectories: number }> {
  const out = new Map<number, { lines: number; trajectories: number }>();
  for (const line of readFileSync(join(dir, "metrics.jsonl"), "utf8").trim().split("\n")) {
    const m = JSON.parse(line) as { step: number; trajectories: number };
    const e = out.get(m.step) ?? { lines: 0, trajectories: 0 };
    out.set(m.step, { lines: e.lines + 1, trajectories: e.trajectories + m.trajectories });
  }
  return out;
}

describe.skipIf(!hasNats)("fault optimizer", () => {
  const resumed = "did not finish; resuming it at step [24]";
  it.each([
    ["SIGKILL", 2, /died \(signal SIGKILL\); restarting/, resumed],
    // A drain (Kubernetes evicting the pod): the run stops at a step boundary, the watch ends
    // UNAVAILABLE, and the process exits 0.
    ["SIGTERM", 2, /(died \(exit code 0\); restarting|is unreachable \(.*shutting down.*\))/, resumed],
    // Killed before its first step checkpoint: started over from step 0 under the same id, the
    // dead attempt's trajectories still queued in JetStream dropped, not applied.
    [
      "SIGKILL",
      10,
      /died \(signal SIGKILL\); restarting/,
      "did not finish and wrote no step checkpoint; restarting it from step 0",
    ],
  ] as const)(
    "fault optimizer - %s mid-run (checkpoint every %i steps): restarted on its port, it resumes, and the run completes once",
    async (signal, checkpointEvery, why, resumes) => {
      const config = tinyRunConfig(CHECKPOINT, { steps: 6, checkpointEvery, ...RUN });
      const lines: string[] = [];
      const log = (line: string) => lines.push(line);
      const cluster = await startLocalCluster(config, log, { restartPolicy: { firstDelayMs: 200 } });
      const optimizer = connectOptimizer(cluster.addresses.optimizer, 30_000);
      try {
        const killed = cluster.pids.optimizer as number;
        const progress: ProgressReporter = {
          begin: () => undefined,
          log,
          done: () => undefined,
          step(m) {
            if (Number(m.step) === 3 && cluster.pids.optimizer === killed) process.kill(killed, signal);
          },
        };
        const run = await startRemoteRun(optimizer, config.run, clusterRejoin(cluster, log));
        const summary = await followRun(progress, run, false);
        const text = lines.join("\n");
        expect(cluster.pids.optimizer).not.toBe(killed);
        expect(text).toMatch(new RegExp(`rlaif up: the Optimizer \\(pid ${killed}\\) ${why.source}`));
        expect(text).toMatch(new RegExp(`resume-unfinished: run ${run.runId} ${resumes}`));
        expect(text).toMatch(
          new RegExp(`run ${run.runId} is back: (RUNNING|SUCCEEDED) at step \\d+; following it again`),
        );

        const n = config.run.steps * RUN.promptsPerStep * RUN.samplesPerPrompt;
        const perStep = appliedPerStep(join(config.out, run.runId));
        const delivered = [...perStep.values()].reduce((a, e) => a + e.trajectories / e.lines, 0);
        const twice = [...perStep.values()].reduce(
          (a, e) => a + (e.trajectories * (e.lines - 1)) / e.lines,
          0,
        );
        console.log(
          `fault optimizer (${signal}): delivered ${delivered}/${n}, applied twice ${twice}, lost ${n - delivered}`,
        );
        expect([...perStep.keys()]).toEqual([1, 2, 3, 4, 5, 6]);
        expect({ delivered, twice, summary: summary.trajectories, steps: summary.steps }).toEqual({
          delivered: n,
          twice: 0,
          summary: n,
          steps: 6,
        });
      } finally {
        optimizer.close();
        await cluster.close();
      }
    },
    240_000,
  );

  it("fault optimizer - SIGTERM to rlaif up drains every service (exit 0), leaves no process and exits 143", async () => {
    const out = mkdtempSync(join(tmpdir(), "rlaif-up-"));
    const up = spawn(
      process.execPath,
      [
        ...[RLAIF_BIN, "up", "--checkpoint", CHECKPOINT, "--backend", "wasm", "--out", out, "--steps", "500"],
        ...["--prompts-per-step", "2", "--samples-per-prompt", "2", "--max-new-tokens", "8"],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    const stepping = new Promise<void>((resolve) => {
      up.stderr.on("data", (d) => {
        stderr += d;
        if (/^step 1\/500 /m.test(stderr)) resolve();
      });
    });
    await Promise.race([
      stepping,
      once(up, "exit").then(() => {
        throw new Error(`rlaif up exited before its first step:\n${stderr}`);
      }),
    ]);
    const pids = JSON.parse((/ pids (\{.*\})$/m.exec(stderr) as RegExpExecArray)[1] as string) as Record<
      string,
      number
    >;
    expect(Object.keys(pids).sort()).toEqual(["feedback", "nats", "optimizer", "policy", "rollout"]);
    up.kill("SIGTERM");
    const [code] = await once(up, "exit");
    expect(code, stderr).toBe(143);
    for (const name of ["feedback", "policy", "rollout", "optimizer"]) {
      expect(stderr).toMatch(
        new RegExp(`^rlaif up: stopped ${name} \\(pid ${pids[name]}\\): exit code 0 after`, "m"),
      );
    }
    expect(stderr).toMatch(/^rlaif up: SIGTERM: stopped every process it started$/m);
    expect(await allGone(Object.values(pids), 10_000), `left running: ${JSON.stringify(pids)}`).toBe(true);
  }, 240_000);
});
