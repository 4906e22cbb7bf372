/**
 * One step's StepMetrics, built from the step's update, its samples and the pipeline figures
 * (step-stats.ts), and the bus's queue depths. Apart from the run loop (run-driver.ts) so the
 * loop reads as the loop, and the metrics' fields are filled in one place.
 */
import { create } from "@bufbuild/protobuf";
import {
  type StepMetrics,
  StepMetricsSchema,
  type Trajectory,
} from "../core/gen/rlaif/common/v1/types_pb.js";
import type { Bus } from "../core/src/bus/bus.js";
import { meanStd, sampleKl } from "./run-helpers.js";
import type { LearnerStepResult } from "./run-types.js";
import type { TrajectoryInbox } from "./step-io.js";
import { tokensPerSecondByWorker } from "./step-stats.js";

/** What a step's metrics say about the pipeline, besides the update's own figures (step-stats.ts). */
export interface PipelineStats {
  staleness: number;
  stalenessHistogram: number[];
  excludedByCause: Record<string, number>;
  droppedByCause: Record<string, number>;
}

/** Completion tokens of `trajs`. */
export function completionTokens(trajs: readonly Trajectory[]): number {
  return trajs.reduce((s, t) => s + t.completionTokens.length, 0);
}

/** What {@link stepMetrics} is built from. */
export interface StepFigures {
  runId: string;
  step: number;
  /** performance.now() when the step began. */
  stepStart: number;
  /** Samples that arrived for the step; `trajs` of them were applied. */
  arrived: number;
  trajs: Trajectory[];
  update: LearnerStepResult;
  pipeline: PipelineStats;
  /** The learner's busy share and the seconds since the previous step (BusyClock.lap). */
  lap: { busyFraction: number; seconds: number };
  weightsVersion: number;
  /** Seconds the run has trained, read when the metrics are built. */
  wallSeconds: () => number;
  queueDepths: () => Promise<Record<string, number>>;
  /** Bytes the weights publishes since the previous step's metrics put, and whether the last was a delta. */
  published: { bytes: number; delta: boolean };
}

/** The step's metrics message. */
export async function stepMetrics(f: StepFigures): Promise<StepMetrics> {
  const { trajs, update, pipeline, lap } = f;
  const [meanReward, stdReward] = meanStd(trajs.map((t) => t.reward));
  return create(StepMetricsSchema, {
    runId: f.runId,
    step: f.step,
    meanReward,
    stdReward,
    kl: sampleKl(trajs),
    entropy: update.entropy,
    gradNorm: update.gradNorm,
    loss: update.loss,
    trajectories: trajs.length,
    excluded: f.arrived - trajs.length,
    tokensPerSecond: completionTokens(trajs) / ((performance.now() - f.stepStart) / 1000),
    clipFraction: update.clipFraction ?? 0,
    klCoef: update.klCoef ?? 0,
    learningRate: update.learningRate ?? 0,
    updateSkipped: update.updateSkipped ?? false,
    sampleStaleness: pipeline.staleness,
    deadLettered: pipeline.excludedByCause.dead_lettered ?? 0,
    weightsVersion: BigInt(f.weightsVersion),
    wallSeconds: f.wallSeconds(),
    optimizerBusyFraction: lap.busyFraction,
    rolloutTokensPerSecond: tokensPerSecondByWorker(trajs, lap.seconds),
    stalenessHistogram: pipeline.stalenessHistogram,
    queueDepths: await f.queueDepths(),
    excludedByCause: pipeline.excludedByCause,
    droppedByCause: pipeline.droppedByCause,
    weightsBytesPublished: BigInt(f.published.bytes),
    weightsDelta: f.published.delta,
    rewardNormMean: update.rewardNorm?.mean ?? {},
    rewardNormStd: update.rewardNorm?.std ?? {},
    rewardsClipped: update.rewardNorm?.clipped ?? 0,
  });
}

/**
 * Queue depths for the metrics (StepMetrics.queue_depths). A bus that cannot say leaves its
 * entry out and logs why: a depth is a report, never a reason to fail the step.
 */
export async function queueDepths(
  bus: Bus,
  inbox: TrajectoryInbox | null,
  log?: (line: string) => void,
): Promise<Record<string, number>> {
  const depths: Record<string, number> = { trajectories_held: inbox?.held() ?? 0 };
  for (const name of ["jobs", "trajectories"] as const) {
    try {
      depths[name] = await (await bus.queue(name)).pending();
    } catch (err) {
      log?.(`optimizer: could not read the ${name} queue's depth: ${(err as Error).message}`);
    }
  }
  return depths;
}
