/**
 * Learning-rate schedules. Pre-training and the policy-gradient learner share them, so a schedule
 * is defined once.
 */

/** Settings of `learningRate`. */
export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Linear warm-up from 0 over this many steps. */
  warmupSteps: number;
  /** Step at which the cosine reaches its floor. */
  totalSteps: number;
  /** Floor as a fraction of `lr` (default 0.1). */
  minRatio?: number;
}

/** Learning rate at `step` (0-based): linear warm-up, then cosine decay to `minRatio · lr`. */
export function learningRate(step: number, o: ScheduleOptions): number {
  const floor = o.lr * (o.minRatio ?? 0.1);
  // warm-up: η_t = η (t + 1) / W
  if (step < o.warmupSteps) return (o.lr * (step + 1)) / o.warmupSteps;
  const span = Math.max(1, o.totalSteps - o.warmupSteps);
  const progress = Math.min(1, (step - o.warmupSteps) / span);
  // cosine: η_t = η_min + ½ (η − η_min)(1 + cos(π p))
  return floor + 0.5 * (o.lr - floor) * (1 + Math.cos(Math.PI * progress));
}

/** How the learner's learning rate evolves over a run. */
export interface RunScheduleOptions {
  /** Peak learning rate η. */
  lr: number;
  /** Linear warm-up steps W (0 = none). */
  warmupSteps: number;
  /** Steps of the run (the cosine reaches its floor at the last one). */
  totalSteps: number;
  /** After warm-up: constant η, or cosine decay to 0.1·η. */
  decay: "none" | "cosine";
}

/** Learning rate at `step` (0-based): warm-up then constant or cosine (see {@link learningRate}). */
export function runLearningRate(step: number, o: RunScheduleOptions): number {
  if (o.decay === "cosine") {
    // η_t from learningRate: warm-up, then η_min + ½ (η − η_min)(1 + cos(π p))
    return learningRate(step, {
      lr: o.lr,
      warmupSteps: o.warmupSteps,
      totalSteps: Math.max(1, o.totalSteps - 1),
    });
  }
  // warm-up: η_t = η (t + 1) / W, then η_t = η
  return step < o.warmupSteps ? (o.lr * (step + 1)) / o.warmupSteps : o.lr;
}
