import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { FeedbackService, ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { RpcError } from "../services/core/src/errors.js";
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
      if (t.scoreStatus === ScoreStatus.OK) {
        expect(t.rationale).toMatch(/kind word|no words/);
        expect(t.reward).toBeGreaterThanOrEqual(-1);
      } else {
        // abstained (another script) or failed (too long): excluded, with the scorer's reason
        expect(t.error).toMatch(/^scorer python-kind-words (abstained|failed on this sample)/);
        expect(t.reward).toBe(0);
      }
    }
    rollout.close();
  });

  it("feedback(external) - the Python service speaks the contract: statuses, GetInfo, idempotency keys", async () => {
    const feedback = createClient(FeedbackService, address, { defaultTimeoutMs: 30_000 });
    try {
      const info = await feedback.getInfo({});
      expect(info).toMatchObject({ scorerId: "python-kind-words", deterministic: true, maxBatchItems: 256 });
      expect(info.rewardRange).toMatchObject({ min: -1, max: 1 });
      const res = await feedback.score({
        items: [
          { prompt: "p", completion: "a good and kind day", idempotencyKey: "r.1.0.0" },
          { prompt: "p", completion: "日本語の文", idempotencyKey: "r.1.0.1" },
          { prompt: "p", completion: "long ".repeat(1000), idempotencyKey: "r.1.0.2" },
          { prompt: "p", completion: "...", idempotencyKey: "" },
        ],
      });
      expect(res.scores.map((s) => s.status)).toEqual([
        ScoreStatus.OK,
        ScoreStatus.ABSTAIN,
        ScoreStatus.ERROR,
        ScoreStatus.OK,
      ]);
      expect(res.scores.map((s) => s.idempotencyKey)).toEqual(["r.1.0.0", "r.1.0.1", "r.1.0.2", ""]);
      expect(res.scores[0]?.reward).toBeCloseTo(2 / 5, 6);
      expect(res.scores[2]?.error).toMatch(/5000 characters, this scorer reads at most 4000/);
      expect(res.scores[3]?.reward).toBe(-1);
      const again = await feedback.score({
        items: [{ prompt: "p", completion: "a good and kind day", idempotencyKey: "r.1.0.0" }],
      });
      expect(again.scores[0]).toEqual(res.scores[0]);
      const reused = await feedback
        .score({ items: [{ prompt: "p", completion: "other text", idempotencyKey: "r.1.0.0" }] })
        .catch((e: unknown) => e);
      expect(reused).toBeInstanceOf(RpcError);
      expect((reused as RpcError).code).toBe(status.INVALID_ARGUMENT);
      expect((reused as RpcError).message).toMatch(/items\[0\]\.idempotency_key/);
    } finally {
      feedback.close();
    }
  });

  it("feedback(external) - a training run completes with the external scorer, its excluded samples counted", async () => {
    const run = await cluster.optimizer.runs.start(tinyRunConfig("unused", { steps: 2 }).run);
    const summary = await run.done;
    expect(run.error).toBe("");
    const excluded = run.driver.history.reduce((n, m) => n + m.excluded, 0);
    expect((summary?.trajectories ?? 0) + excluded).toBe(16);
    expect((summary?.abstained ?? 0) + (summary?.scorerErrors ?? 0)).toBe(excluded);
    const rewards = run.driver.history.map((m) => m.meanReward.toFixed(3)).join(" → ");
    console.log(
      `python feedback run: reward ${rewards}, ${summary?.trajectories} trained on, ${summary?.abstained} abstained, ${summary?.scorerErrors} scorer errors`,
    );
  });
});
