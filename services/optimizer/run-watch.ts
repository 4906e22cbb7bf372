/**
 * WatchMetrics' stream of a run of this Optimizer: its steps from `fromStep` (1-based; 0 = the
 * first), then each new one as it is taken, until the run ends or `signal` aborts. Apart from
 * the controller (run-controller.ts) so that one keeps to starting and tracking runs.
 */
import type { StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";
import { RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import type { RunRecord } from "./run-controller.js";

/** The metrics of `run` from `fromStep`, recorded ones first, then live ones. */
export async function* watchRun(
  run: RunRecord,
  signal: AbortSignal,
  fromStep: number,
): AsyncGenerator<StepMetrics> {
  const pending: (StepMetrics | null)[] = [];
  let wake: (() => void) | null = null;
  const push = (m: StepMetrics | null) => {
    pending.push(m);
    wake?.();
  };
  run.watchers.add(push);
  signal.addEventListener("abort", () => wake?.(), { once: true });
  try {
    let sent = Math.max(0, fromStep - 1);
    for (const m of run.driver.history) {
      if (m.step <= sent) continue;
      sent = m.step;
      yield m;
    }
    if (run.state !== RunState.RUNNING && run.state !== RunState.PAUSED) return;
    while (!signal.aborted) {
      const m = pending.shift();
      if (m === undefined) {
        await new Promise<void>((r) => {
          wake = r;
        });
        continue;
      }
      if (m === null) return;
      if (m.step > sent) {
        sent = m.step;
        yield m;
      }
    }
  } finally {
    run.watchers.delete(push);
  }
}
