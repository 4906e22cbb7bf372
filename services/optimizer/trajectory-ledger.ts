/**
 * The trajectory ledger of a run (docs/architecture.md#exactly-once): which trajectory ids each
 * step applied since the previous checkpoint, and which steps' jobs were out (queued, sampled or
 * buffered unacked in the inbox) when a checkpoint was written. A resumable checkpoint carries it
 * as JSON under metadata `trajectoryLedger` (TRAJECTORY_LEDGER_KEY).
 *
 * What a resumed run does with it — drop and regenerate, never apply a crashed attempt's sample:
 * every trajectory a crashed attempt of the run left on the bus (its bus run id is the run id,
 * or `<run id>-resume<k>-<hex>` for an earlier resume) is acked and counted, never applied:
 *
 * - one of a step after the checkpoint ("in flight": queued by the attempt that died, sampled or
 *   buffered when it died) is dropped and its step sampled again under the new bus run id, with
 *   the same seeds from the same weights, so the samples applied are the ones an uninterrupted
 *   run applies (bitwise: test/optimizer-resume.test.ts);
 * - one the ledger lists as applied at or before the checkpoint is a late redelivery of
 *   something the continuing state already holds: applying it would be applying it twice.
 *
 * Why not apply the in-flight copies instead: the steps the attempt applied after its last
 * checkpoint were acked with their updates and are gone from the queue, so they must be sampled
 * again anyway; the copies of later steps were drawn by versions whose numbers the new attempt
 * does not reuse, and mixing them in would make the resumed run differ from an uninterrupted one
 * depending on how far the crashed attempt got. Regenerating costs at most (crash step − k + n)
 * steps of sampling, and keeps the account exact: every sample of the run is either in the
 * continuing state once or in the `droppedInFlight` count of the summary.
 */
import type { Trajectory } from "../core/gen/rlaif/common/v1/types_pb.js";
import { CheckpointError } from "../core/src/errors.js";

/** What a checkpoint records (the JSON of metadata `trajectoryLedger`). */
export interface LedgerRecord {
  /** The bus run id the listed steps were applied under. */
  busRunId: string;
  /** Step of the checkpoint the ledger was written with. */
  step: number;
  /** Step of the checkpoint before it (0: none): `applied` covers the steps after it. */
  sinceStep: number;
  /** Trajectory ids each step after `sinceStep`, up to `step`, applied ("<step>" → ids). */
  applied: Record<string, string[]>;
  /** Last step whose jobs were queued: steps `step` + 1 .. `queuedThrough` were in flight. */
  queuedThrough: number;
}

/** Counts of what a resumed run dropped of its crashed attempts' trajectories. */
export interface LedgerDrops {
  /** Of steps after the checkpoint: regenerated under the new bus run id. */
  inFlight: number;
  /** Listed in the ledger as applied at or before the checkpoint: a late redelivery. */
  alreadyApplied: number;
  /** Of steps at or before the checkpoint and not listed (settled before its ledger began). */
  settled: number;
}

/** Keeps a run's ledger as it steps, and classifies a crashed attempt's trajectories on resume. */
export class TrajectoryLedger {
  private readonly applied = new Map<number, string[]>();
  private sinceStep: number;
  private queuedThrough: number;
  /** Ids the resumed-from checkpoint lists as applied (empty for a fresh run). */
  private readonly before: ReadonlySet<string>;
  readonly drops: LedgerDrops = { inFlight: 0, alreadyApplied: 0, settled: 0 };

  constructor(
    private readonly runId: string,
    private readonly busRunId: string,
    resumedFrom: LedgerRecord | null,
    private readonly resumeStep: number,
    private readonly log?: (line: string) => void,
  ) {
    this.sinceStep = resumeStep;
    this.queuedThrough = resumeStep;
    this.before = new Set(Object.values(resumedFrom?.applied ?? {}).flat());
  }

  /** The jobs of steps up to `step` are out. */
  queued(step: number): void {
    this.queuedThrough = Math.max(this.queuedThrough, step);
  }

  /** `step`'s update applied these trajectories. */
  stepApplied(step: number, trajectories: readonly Trajectory[]): void {
    this.applied.set(
      step,
      trajectories.map((t) => t.id),
    );
  }

  /** The record a checkpoint of `step` carries (the steps applied since the previous one). */
  record(step: number): LedgerRecord {
    const applied: Record<string, string[]> = {};
    for (const [s, ids] of this.applied) if (s > this.sinceStep && s <= step) applied[String(s)] = ids;
    return {
      busRunId: this.busRunId,
      step,
      sinceStep: this.sinceStep,
      applied,
      queuedThrough: this.queuedThrough,
    };
  }

  /** A checkpoint of `step` was written: the next one lists the steps after it. */
  checkpointed(step: number): void {
    this.sinceStep = step;
    for (const s of [...this.applied.keys()]) if (s <= step) this.applied.delete(s);
  }

  /**
   * The inbox dropped `t` (another run's, or a step not being gathered). When it belongs to a
   * crashed attempt of this run, count it and say why it is not applied.
   */
  dropped(t: Trajectory): void {
    if (t.runId === this.busRunId || !isAttemptOf(t.runId, this.runId)) return;
    const { resumeStep } = this;
    const step = Number(t.step);
    let why: string;
    if (step > resumeStep) {
      this.drops.inFlight++;
      why = `in flight when attempt ${t.runId} died (step ${step} > checkpoint step ${resumeStep}); step ${step} is sampled again under ${this.busRunId}`;
    } else if (this.before.has(t.id)) {
      this.drops.alreadyApplied++;
      why = `already applied at step ${step} (listed in the checkpoint's ledger)`;
    } else {
      this.drops.settled++;
      why = `of step ${step}, settled before the checkpoint of step ${resumeStep}`;
    }
    this.log?.(`optimizer: dropping trajectory ${t.id}: ${why}`);
  }
}

/** Whether `busRunId` is run `runId`'s own id or one of its resumed attempts' (`<runId>-resume…`). */
export function isAttemptOf(busRunId: string, runId: string): boolean {
  return busRunId === runId || busRunId.startsWith(`${runId}-resume`);
}

/** The metadata value of a ledger. */
export function encodeLedger(record: LedgerRecord): string {
  return JSON.stringify(record);
}

/**
 * A checkpoint's ledger, checked: null when the checkpoint has none (written before ledgers
 * existed; its run resumes as before, every crashed attempt's trajectory counted as in flight or
 * settled). CheckpointError when it is malformed or not of the checkpoint's step.
 */
export function decodeLedger(path: string, raw: string | undefined, step: number): LedgerRecord | null {
  if (raw === undefined) return null;
  let r: LedgerRecord;
  try {
    r = JSON.parse(raw) as LedgerRecord;
  } catch (cause) {
    throw new CheckpointError(`${path}: metadata 'trajectoryLedger' is not valid JSON`, { cause });
  }
  const ok =
    typeof r === "object" &&
    r !== null &&
    typeof r.busRunId === "string" &&
    r.step === step &&
    Number.isInteger(r.sinceStep) &&
    Number.isInteger(r.queuedThrough) &&
    r.queuedThrough >= step &&
    typeof r.applied === "object" &&
    r.applied !== null &&
    Object.values(r.applied).every((ids) => Array.isArray(ids) && ids.every((id) => typeof id === "string"));
  if (!ok) {
    throw new CheckpointError(
      `${path}: metadata 'trajectoryLedger' is malformed or not of the checkpoint's step ${step}`,
    );
  }
  return r;
}
