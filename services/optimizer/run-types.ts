/**
 * The contracts of the run loop (run-driver.ts) with the learning side and with a resume: what a
 * learner must offer, what one update reports, and where a resumed run picks up. Apart from the
 * loop so the learners, the checkpoint code and the tests depend on these shapes, not on the loop.
 */
import type { EventLoopUtilization } from "node:perf_hooks";
import type { StepMetrics, Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import type { WeightMap } from "../core/src/model/causal-lm.js";
import type { CheckpointTokenizer } from "../core/src/model/checkpoint.js";
import type { ThreadMemory } from "../core/src/thread/memory-probe.js";
import type { LedgerRecord } from "./trajectory-ledger.js";

/** What one update reports (the optional parts default to 0 in the metrics). */
export interface LearnerStepResult {
  loss: number;
  gradNorm: number;
  entropy: number;
  /** Share of completion tokens whose importance ratio was clipped/truncated. */
  clipFraction?: number;
  /** β of the KL penalty used by the update. */
  klCoef?: number;
  /** Learning rate used by the update. */
  learningRate?: number;
  /** True when the gradient was not finite and nothing was updated (weights, Adam, baseline, β). */
  updateSkipped?: boolean;
  /** With reward normalisation or clipping on: the running μ and σ per scorer, and the samples clipped. */
  rewardNorm?: { mean: Record<string, number>; std: Record<string, number>; clipped: number };
}

/** What the run loop needs from the learning side (model + optimiser). */
export interface Learner {
  readonly modelKind: string;
  /** Tokens the model reads at most (BOS + prompt + completion). */
  readonly contextLength: number;
  /** The model's tokenizer, so prompts are measured in its tokens (absent: the byte tokenizer). */
  readonly tokenizer?: CheckpointTokenizer;
  /** One policy-gradient update on these trajectories. */
  step(trajectories: Trajectory[]): Promise<LearnerStepResult>;
  /** Current weights in the safetensors layout published to replicas. */
  weightsBlob(): Promise<Uint8Array>;
  /**
   * Write a checkpoint file (atomically); resolves with its SHA-256. With `resumable`, the file
   * also carries the optimiser state and these extra tensors, so a run can continue from it.
   */
  saveCheckpoint(
    path: string,
    metadata: Record<string, string>,
    resumable?: { tensors: WeightMap },
  ): Promise<string>;
  /** Free the model and optimiser state. */
  dispose(): void;
  /**
   * Where the learner computes in a thread of its own: that thread's event-loop utilisation, so
   * a bench can tell whether updates overlapped sampling.
   */
  eventLoopUtilization?(prev?: EventLoopUtilization): EventLoopUtilization;
  /**
   * Where the learner computes in a thread of its own: that thread's memory and live tensors
   * (memory-probe.ts), so a soak can tell a leak in the learner from one elsewhere.
   */
  memory?(): Promise<ThreadMemory>;
}

/** Where a resumed run picks up (read from a resumable checkpoint by run-checkpoint.ts). */
export interface ResumePoint {
  /** Steps already applied. */
  step: number;
  /** The run's frozen reference weights (its first version), as a weights blob. */
  referenceBlob: Uint8Array;
  /** The weights the replicas served after `step` (the last publish) and the step they are from. */
  servedBlob: Uint8Array;
  servedStep: number;
  /** Metrics of the steps before (for WatchMetrics and the summary; may be incomplete). */
  history: StepMetrics[];
  /** Totals of the steps before, for the summary. */
  trajectories: number;
  tokens: number;
  wallSeconds: number;
  /** The checkpoint's trajectory ledger (trajectory-ledger.ts); null when it predates ledgers. */
  ledger?: LedgerRecord | null;
}
