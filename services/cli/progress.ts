/**
 * Reports training progress on stderr (stdout stays free for `--json`).
 *
 * On a terminal: a progress bar (cli-progress) with steps, elapsed time, ETA, reward, KL and
 * weights version, kept at the bottom: log lines ("policy: now serving weights v3") are written
 * above it and the bar is redrawn under them, and every {@link PERSIST_EVERY} steps (and the
 * last) a full step line stays in the scroll-back, so the history survives the bar.
 * Elsewhere (CI logs, files, pipes): one plain line per step and per log line, nothing redrawn.
 */
import cliProgress from "cli-progress";
import type { StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";

/** Something that receives a run's progress. */
export interface ProgressReporter {
  /** The run starts (or resumes) at `fromStep` of `total`: the bar appears. */
  begin(total: number, fromStep?: number): void;
  step(m: StepMetrics): void;
  /** A free-form line (start-up, warnings, service logs). */
  log(line: string): void;
  /** The run is over (either way): the bar goes, the last step's line stays. Idempotent. */
  done(): void;
}

/** On a terminal, a step's full line is kept every this many steps (and at the last step). */
export const PERSIST_EVERY = 5;

function fmt(x: number, digits = 3): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

/** Seconds as m:ss or h:mm:ss. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh > 0 ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** The plain one-line report of a step (CI logs, and the kept lines on a terminal). */
export function stepLine(m: StepMetrics, total: number): string {
  return (
    `step ${Number(m.step)}/${total} reward ${fmt(m.meanReward)} ±${fmt(m.stdReward, 2)} kl ${fmt(m.kl)} ` +
    `tok/s ${fmt(m.tokensPerSecond, 0)} v${m.weightsVersion} loss ${fmt(m.loss, 4)} grad ${fmt(m.gradNorm, 2)} ` +
    `ent ${fmt(m.entropy)} clip ${fmt(m.clipFraction)} β ${fmt(m.klCoef, 4)} ` +
    `lr ${m.learningRate.toExponential(2)} t ${fmt(m.wallSeconds, 1)}s`
  );
}

interface BarPayload {
  /** Whether a step has been reported since the bar appeared (an ETA needs a rate). */
  stepped: boolean;
  reward: string;
  kl: string;
  version: string;
}

/** Width of the bar itself: as wide as the terminal leaves room for, within these bounds. */
const BAR_WIDTH = { min: 10, max: 30 };

/**
 * The bar's line: `[████░░░░] 3/6 · 0:07 elapsed · ETA 0:08 · reward 0.123 ±0.30 · kl 0.004 · v4`.
 * The ETA is cli-progress's estimate from the recent step rate, "--" before the first step.
 * The bar narrows so that the numbers fit the terminal's width.
 */
function barLine(params: cliProgress.Params, payload: BarPayload): string {
  const elapsed = ((params.stopTime ?? Date.now()) - params.startTime) / 1000;
  const eta = payload.stepped && typeof params.eta === "number" ? clock(params.eta) : "--";
  const text =
    ` ${params.value}/${params.total} · ${clock(elapsed)} elapsed · ETA ${eta} · ` +
    `reward ${payload.reward} · kl ${payload.kl}${payload.version ? ` · ${payload.version}` : ""}`;
  const room = params.maxWidth - text.length - 3;
  const width = Math.max(BAR_WIDTH.min, Math.min(BAR_WIDTH.max, room));
  const filled = Math.round(width * Math.min(1, Math.max(0, params.progress)));
  return `[${"█".repeat(filled)}${"░".repeat(width - filled)}]${text}`;
}

/** A reporter writing to `stream` (default stderr): a bar on a terminal, plain lines elsewhere. */
export function createProgress(stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  const tty = Boolean(stream.isTTY);
  let multi: cliProgress.MultiBar | null = null;
  let bar: cliProgress.SingleBar | null = null;
  let total = 0;
  let last: { m: StepMetrics; kept: boolean } | null = null;
  const write = (line: string) => {
    if (multi) multi.log(`${line}\n`);
    else stream.write(`${line}\n`);
  };
  return {
    begin(steps, fromStep = 0) {
      total = steps;
      if (!tty || multi) return;
      const options = {
        stream,
        format: (_: cliProgress.Options, p: cliProgress.Params, payload: BarPayload) => barLine(p, payload),
        fps: 4,
        // Log lines wrap as the terminal wraps them; the bar line is cut at the terminal width.
        linewrap: true,
        clearOnComplete: true,
        etaBuffer: 5,
      } satisfies cliProgress.Options;
      multi = new cliProgress.MultiBar(options);
      const payload: BarPayload = { stepped: false, reward: "--", kl: "--", version: "" };
      bar = multi.create(steps, fromStep, payload);
    },
    step(m) {
      const step = Number(m.step);
      const keep = !tty || step === total || step % PERSIST_EVERY === 0;
      if (keep) write(stepLine(m, total));
      last = { m, kept: keep };
      bar?.update(Math.min(step, total), {
        stepped: true,
        reward: `${fmt(m.meanReward)} ±${fmt(m.stdReward, 2)}`,
        kl: fmt(m.kl),
        version: `v${m.weightsVersion}`,
      });
    },
    log(line) {
      write(line);
    },
    done() {
      if (last && !last.kept) write(stepLine(last.m, total));
      last = null;
      if (!multi) return;
      // Flush the lines logged since the last redraw, then take the bar away.
      multi.update();
      multi.stop();
      multi = null;
      bar = null;
    },
  };
}
