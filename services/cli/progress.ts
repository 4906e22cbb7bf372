/**
 * Reports training progress on stderr: a one-line progress bar redrawn in place when stderr is a
 * terminal, plain log lines otherwise (CI logs, files, pipes). stdout stays free for `--json`.
 */
import type { StepMetrics } from "../core/gen/rlaif/common/v1/types_pb.js";

/** Something that receives each step's metrics. */
export interface ProgressReporter {
  step(m: StepMetrics): void;
  /** A free-form line (start-up, warnings). */
  log(line: string): void;
  done(): void;
}

function fmt(x: number, digits = 3): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

/** A reporter for `total` steps writing to `stream` (defaults to process.stderr). */
export function createProgress(total: number, stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  const tty = Boolean(stream.isTTY);
  let drawn = false;
  const clear = () => {
    if (tty && drawn) stream.write("\r\x1b[2K");
    drawn = false;
  };
  return {
    step(m) {
      const step = Number(m.step);
      const text = `step ${step}/${total} reward ${fmt(m.meanReward)} ±${fmt(m.stdReward, 2)} kl ${fmt(m.kl)} tok/s ${fmt(m.tokensPerSecond, 0)} v${m.weightsVersion}`;
      if (!tty) {
        stream.write(
          `${text} loss ${fmt(m.loss, 4)} grad ${fmt(m.gradNorm, 2)} ent ${fmt(m.entropy)} clip ${fmt(m.clipFraction)} β ${fmt(m.klCoef, 4)} lr ${m.learningRate.toExponential(2)} t ${fmt(m.wallSeconds, 1)}s\n`,
        );
        return;
      }
      const width = 24;
      const filled = Math.round((width * Math.min(step, total)) / Math.max(total, 1));
      clear();
      stream.write(`[${"#".repeat(filled)}${".".repeat(width - filled)}] ${text}`);
      drawn = true;
    },
    log(line) {
      clear();
      stream.write(`${line}\n`);
    },
    done() {
      if (tty && drawn) stream.write("\n");
      drawn = false;
    },
  };
}
