import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const SERVER = join(import.meta.dirname, "..", "examples", "python-feedback", "server.py");
const hasGrpcPython = requireTool(TOOLS.pythonGrpc);

describe.skipIf(!hasGrpcPython)("feedback(external)", () => {
  let python: ChildProcess;
  let address: string;
  let cluster: EmbeddedCluster;

  beforeAll(async () => {
    python = spawn(PYTHON, [SERVER, "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
    const lines = createInterface({ input: python.stdout as NodeJS.ReadableStream });
    const [line] = (await Promise.race([
      once(lines, "line"),
      once(python, "exit").then(() => {
        throw new Error("the Python feedback server exited before listening");
      }),
    ])) as [string];
    address = (/listening on (\S+)/.exec(line) as RegExpExecArray)[1] as string;
    const config = tinyRunConfig(await writeTinyCheckpoint());
    config.services.feedbackAddress = address;
    cluster = await startEmbeddedCluster(config);
  }, 60_000);
  afterAll(async () => {
    await cluster?.close();
    python?.kill();
  });

  it("feedback(external) - a Python FeedbackService plugged in by address scores the rollouts", async () => {
    expect(cluster.feedbackAddress).toBe(address);
    const rollout = createClient(RolloutService, cluster.rollout.server.address, {
      defaultTimeoutMs: 30_000,
    });
    const res = await rollout.collect({
      prompts: ["I think", "The film"],
      samplesPerPrompt: 2,
      sampling: { maxNewTokens: 6 },
    });
    expect(res.trajectories).toHaveLength(4);
    for (const t of res.trajectories) {
      expect(t.scorerId).toBe("python-kind-words");
      expect(t.rationale).toMatch(/kind word|no words/);
      expect(t.reward).toBeGreaterThanOrEqual(-1);
    }
    rollout.close();
  });

  it("feedback(external) - a training run completes with the external scorer", async () => {
    const run = await cluster.optimizer.runs.start(tinyRunConfig("unused", { steps: 2 }).run);
    const summary = await run.done;
    expect(run.error).toBe("");
    expect(summary?.trajectories).toBe(16);
  });
});
