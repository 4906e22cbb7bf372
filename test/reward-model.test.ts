import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { labelPairs, scorerLabeller } from "../services/cli/preference-labelling.js";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { bradleyTerryLoss } from "../services/core/src/learn/bradley-terry.js";
import { DEFAULT_HEAD_TRAINING } from "../services/core/src/learn/reward-head.js";
import { trainRewardModel } from "../services/core/src/learn/reward-model-training.js";
import { startBackend } from "../services/core/src/model/backend.js";
import { heldOutPrompts } from "../services/core/src/model/corpus.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { compositeScorer } from "../services/feedback/composite-scorer.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { rewardModelScorer } from "../services/feedback/reward-model-scorer.js";

const BACKBONE = "checkpoints/gru/model.safetensors";

beforeAll(async () => {
  await startBackend("auto");
});

describe("reward model", () => {
  it("reward model - the Bradley–Terry loss's gradient matches finite differences", () => {
    const c = [0.3, -1.2, 2.0];
    const r = [0.1, 0.4, -0.5];
    const f = (x: number[]) =>
      tf.tidy(() => bradleyTerryLoss(tf.tensor1d(x), tf.tensor1d(r)).dataSync()[0] as number);
    const grad = tf.tidy(
      () =>
        tf
          .grad((x: tf.Tensor) => bradleyTerryLoss(x as tf.Tensor1D, tf.tensor1d(r)))(tf.tensor1d(c))
          .arraySync() as number[],
    );
    const h = 1e-2;
    c.forEach((_, i) => {
      const up = c.map((v, j) => (j === i ? v + h : v));
      const down = c.map((v, j) => (j === i ? v - h : v));
      expect(grad[i]).toBeCloseTo((f(up) - f(down)) / (2 * h), 3);
    });
  });

  it("reward model - trained on a rule's labels it ranks at least 90% of held-out pairs as the rule does and serves it over gRPC", async () => {
    const model = await loadModel(BACKBONE);
    const dir = mkdtempSync(path.join(tmpdir(), "rlaif-rm-"));
    const run = { maxNewTokens: 24, temperature: 1, topK: 0, topP: 1, seed: 1 };
    const res = await labelPairs(
      model,
      heldOutPrompts(1024, 1),
      8000,
      run,
      scorerLabeller(compositeScorer("length(4-6):1")),
    );
    expect(res.labels.length).toBeGreaterThan(500);
    const trained = trainRewardModel(res.labels, {
      backbone: model,
      backbonePath: BACKBONE,
      labelsFile: "labels.jsonl",
      outDir: dir,
      heldOutShare: 0.2,
      head: DEFAULT_HEAD_TRAINING,
      log: () => {},
    });
    model.dispose();
    // measured 94.5% on 655 held-out pairs (the target is 90%, docs/reward-model.md); chance is 50%
    expect(trained.heldOutAccuracy).toBeGreaterThanOrEqual(0.9);
    const scorer = await rewardModelScorer(dir);
    const server = await startFeedbackServer({ port: 0, scorer });
    const client = createClient(FeedbackService, server.address, { defaultTimeoutMs: 30_000 });
    try {
      const items = [
        { prompt: "The day", completion: " was long and" },
        { prompt: "He", completion: " said" },
      ];
      const a = await client.score({ items });
      const b = await client.score({ items });
      expect(a.modelHash).toBe(trained.config.hash);
      expect(a.scorerId).toBe("reward-model");
      expect(a.scores.map((s) => s.reward)).toEqual(b.scores.map((s) => s.reward));
      expect(a.scores.every((s) => s.status === 1 && Number.isFinite(s.reward))).toBe(true);
      const info = await client.getInfo({});
      expect(info.maxBatchItems).toBeGreaterThan(0);
      expect(info.deterministic).toBe(true);
    } finally {
      client.close();
      await server.shutdown(1000);
    }
  }, 240_000);
});
