/**
 * The Optimizer's run-failure rule for excluded samples (services/optimizer/exclusion-limit.ts):
 * no usable sample (with the scorer's circuit open: "no scorer is left"), or more than
 * max-excluded-share of a step's samples excluded.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { ScoreStatus } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { exclusionFailure } from "../services/optimizer/exclusion-limit.js";

const ok = () => create(TrajectorySchema, { scoreStatus: ScoreStatus.OK, weightsVersion: 1n });
const failed = (error: string) =>
  create(TrajectorySchema, { scoreStatus: ScoreStatus.ERROR, error, weightsVersion: 1n });
const abstained = () =>
  create(TrajectorySchema, {
    scoreStatus: ScoreStatus.ABSTAIN,
    error: "scorer x abstained",
    weightsVersion: 1n,
  });

describe("feedback resilience limit", () => {
  it("feedback resilience limit - a share at or under the limit trains on; over it fails, naming the causes and the first error", () => {
    const half = [ok(), ok(), failed("scorer a timed out after 3 attempts (50 ms each)"), abstained()];
    expect(exclusionFailure(4, half, 2, 0, 0.5)).toBeNull();
    const most = [ok(), failed("scorer a timed out after 3 attempts (50 ms each)"), abstained(), abstained()];
    expect(exclusionFailure(4, most, 1, 0, 0.5)).toBe(
      "step 4: 3 of 4 samples excluded (1 scorer_error, 2 abstained), more than max-excluded-share 0.5 allows; " +
        "the first error: scorer a timed out after 3 attempts (50 ms each)",
    );
    expect(exclusionFailure(4, most, 1, 0, 0.75)).toBeNull();
  });

  it("feedback resilience limit - no usable sample fails even at share 1; with an open circuit it says no scorer is left", () => {
    const bad = [failed("scorer a answered badly: scores: x"), failed("scorer a answered badly: scores: x")];
    expect(exclusionFailure(2, bad, 0, 0, 1)).toBe(
      "step 2: every sample failed; the first error: scorer a answered badly: scores: x",
    );
    const open = [
      failed("scorer a answered badly: scores: x"),
      failed("scorer 1.2.3.4:5: circuit open after 5 consecutive failures (last: y); not called"),
    ];
    expect(exclusionFailure(2, open, 0, 0, 1)).toBe(
      "step 2: no scorer is left, no sample could be scored: scorer 1.2.3.4:5: circuit open after 5 consecutive failures (last: y); not called",
    );
    expect(exclusionFailure(2, [], 0, 0, 0.5)).toBeNull();
  });
});
