/**
 * The plain files of a run: metrics.jsonl lines that jq and pandas read as numbers and that a
 * resumed run still reads back, and the provenance config.json records.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { StepMetricsSchema, TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { sha256Hex } from "../services/core/src/hash.js";
import { RLAIF_VERSION } from "../services/core/src/version.js";
import { METRICS_FILE, metricsLine, metricsUpTo, writeRunConfig } from "../services/optimizer/run-files.js";
import { noteScorers, runProvenance } from "../services/optimizer/run-provenance.js";

const CONTEXT = {
  checkpoint: "",
  backend: "wasm",
  bus: "nats://127.0.0.1:4222",
  mode: "distributed",
  feedbackAddress: "feedback:50051",
  feedbackInProcess: false,
};

describe("run files", () => {
  it("run files - a metrics line has every field, 64-bit counters as numbers, and reads back", () => {
    const m = create(StepMetricsSchema, {
      runId: "r",
      step: 3,
      meanReward: 0.5,
      weightsVersion: 4n,
      kl: Number.NaN,
    });
    const line = metricsLine(m);
    expect(line.endsWith("\n")).toBe(true);
    const json = JSON.parse(line);
    expect(json.step).toBe(3);
    expect(json.weightsVersion).toBe(4);
    // Zero fields are written, not left out; a non-finite value is null (JSON has no NaN).
    expect(json.excluded).toBe(0);
    expect(json.loss).toBe(0);
    expect(json.kl).toBeNull();
    expect(Object.keys(json).sort()).toEqual(StepMetricsSchema.fields.map((f) => f.jsonName).sort());
    // A resumed run reads its earlier lines back with the protobuf JSON parser.
    const dir = mkdtempSync(join(tmpdir(), "rlaif-run-files-"));
    writeFileSync(
      join(dir, METRICS_FILE),
      [1, 2]
        .map((s) => metricsLine(create(StepMetricsSchema, { step: s, weightsVersion: BigInt(s + 1) })))
        .concat(line, metricsLine(create(StepMetricsSchema, { step: 4 })))
        .join(""),
    );
    const kept = metricsUpTo(dir, 3);
    expect(kept.map((k) => [Number(k.step), Number(k.weightsVersion)])).toEqual([
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
    expect(kept[2]?.meanReward).toBe(0.5);
  });

  it("run files - provenance names the start checkpoint by hash; a resumed run keeps it and adds where it resumed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rlaif-provenance-"));
    const start = join(dir, "start.safetensors");
    const resumed = join(dir, "step-000002.safetensors");
    writeFileSync(start, "start weights");
    writeFileSync(resumed, "step 2 weights");
    const first = await runProvenance({ ...CONTEXT, checkpoint: start }, dir);
    expect(first).toEqual({
      rlaif: RLAIF_VERSION,
      model: { path: start, sha256: sha256Hex(readFileSync(start)) },
      backend: "wasm",
      bus: "nats://127.0.0.1:4222",
      mode: "distributed",
      feedback: { address: "feedback:50051", inProcess: false, scorers: [] },
    });
    const trajectory = (id: string, version: string) =>
      create(TrajectorySchema, { scorerId: id, scorerVersion: version });
    expect(
      noteScorers(first.feedback.scorers, [trajectory("a", "1"), trajectory("a", "1"), trajectory("", "")]),
    ).toBe(true);
    expect(noteScorers(first.feedback.scorers, [trajectory("a", "1")])).toBe(false);
    expect(first.feedback.scorers).toEqual([{ id: "a", version: "1" }]);
    const settings = defaultConfig().run;
    writeRunConfig(dir, "run-1", settings, ["p"], first);
    // Resumed by an Optimizer configured with another starting checkpoint: the run's own stays.
    const again = await runProvenance({ ...CONTEXT, checkpoint: join(dir, "other") }, dir, {
      path: resumed,
      step: 2,
    });
    expect(again.model).toEqual(first.model);
    expect(again.resumedFrom).toEqual({ path: resumed, sha256: sha256Hex(readFileSync(resumed)), step: 2 });
    expect(again.feedback.scorers).toEqual([{ id: "a", version: "1" }]);
    const doc = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    expect(doc.runId).toBe("run-1");
    expect(doc.steps).toBe(settings.steps);
    expect(doc.provenance.model.sha256).toBe(first.model.sha256);
  });
});
