/**
 * The training progress display: on a terminal a bar that log lines never wipe for good (they
 * go above it and the bar is redrawn), with elapsed time, ETA, reward and KL, and a kept step
 * line every few steps; elsewhere one plain line per step. The unit tests drive the reporter
 * with fake timers; the last one runs `rlaif train` in a pseudo-terminal (`script`).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { clock, createProgress, PERSIST_EVERY } from "../services/cli/progress.js";
import { StepMetricsSchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { screen } from "./helpers/screen.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

/** Collects what is written; `isTTY` as asked. */
class Capture extends Writable {
  text = "";
  columns = 120;
  constructor(readonly isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escape sequences
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

function metrics(step: number) {
  return create(StepMetricsSchema, {
    step,
    meanReward: 0.1 * step,
    stdReward: 0.2,
    kl: 0.01 * step,
    weightsVersion: BigInt(step + 1),
    learningRate: 1e-3,
  });
}

const stream = (tty: boolean) => new Capture(tty) as unknown as NodeJS.WriteStream & Capture;

describe("cli progress", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("cli progress - clock reads m:ss and h:mm:ss", () => {
    expect(clock(0)).toBe("0:00");
    expect(clock(65.4)).toBe("1:05");
    expect(clock(3723)).toBe("1:02:03");
  });

  it("cli progress - on a terminal the bar is redrawn below each log line, with time, ETA, reward and KL", () => {
    const out = stream(true);
    const p = createProgress(out);
    p.log("rlaif train: starting");
    p.begin(6);
    vi.advanceTimersByTime(1000);
    expect(screen(out.text)).toEqual([
      "rlaif train: starting",
      expect.stringMatching(/^\[░+\] 0\/6 · 0:01 elapsed · ETA -- · reward -- · kl --$/),
    ]);
    p.step(metrics(1));
    p.log("policy: now serving weights v2");
    p.log("policy: now serving weights v3");
    vi.advanceTimersByTime(1000);
    // The log lines are whole, above the bar, and the bar is back under them with the step's numbers.
    expect(screen(out.text)).toEqual([
      "rlaif train: starting",
      "policy: now serving weights v2",
      "policy: now serving weights v3",
      expect.stringMatching(
        /^\[█+░+\] 1\/6 · 0:02 elapsed · ETA 0:\d\d · reward 0\.100 ±0\.20 · kl 0\.010 · v2$/,
      ),
    ]);
    p.done();
    // Done: the bar is gone, the last step's line stays.
    expect(screen(out.text).filter(Boolean)).toEqual([
      "rlaif train: starting",
      "policy: now serving weights v2",
      "policy: now serving weights v3",
      expect.stringMatching(/^step 1\/6 reward 0\.100/),
    ]);
  });

  it("cli progress - a terminal keeps a full step line every few steps and at the last", () => {
    const out = stream(true);
    const p = createProgress(out);
    p.begin(6);
    for (let s = 1; s <= 6; s++) {
      p.step(metrics(s));
      vi.advanceTimersByTime(500);
    }
    p.done();
    const kept = screen(out.text).filter(Boolean);
    expect(PERSIST_EVERY).toBe(5);
    expect(kept).toEqual([
      expect.stringMatching(/^step 5\/6 reward/),
      expect.stringMatching(/^step 6\/6 reward/),
    ]);
  });

  it("cli progress - a run that stops early keeps its last step's line", () => {
    const out = stream(true);
    const p = createProgress(out);
    p.begin(20);
    p.step(metrics(1));
    p.step(metrics(2));
    p.done();
    p.done();
    expect(screen(out.text).filter(Boolean)).toEqual([expect.stringMatching(/^step 2\/20 reward/)]);
  });

  it("cli progress - without a terminal: one plain line per step and per log line, no escapes", () => {
    const out = stream(false);
    const p = createProgress(out);
    p.begin(3);
    p.log("hello");
    for (let s = 1; s <= 3; s++) p.step(metrics(s));
    p.done();
    expect(out.text).not.toContain("\x1b");
    expect(out.text.split("\n").filter(Boolean)).toEqual([
      "hello",
      expect.stringMatching(/^step 1\/3 reward 0\.100 ±0\.20 kl 0\.010 tok\/s 0 v2 loss/),
      expect.stringMatching(/^step 2\/3 /),
      expect.stringMatching(/^step 3\/3 /),
    ]);
  });
});

const hasScript = (() => {
  try {
    execFileSync("script", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasScript)("cli progress (pseudo-terminal)", () => {
  it("cli progress - rlaif train on a terminal draws the bar and keeps step lines under the log lines", async () => {
    const checkpoint = await writeTinyCheckpoint();
    const bin = join(import.meta.dirname, "..", "bin", "rlaif.js");
    const train = [process.execPath, bin, "train", "--steps", "6", "--checkpoint", checkpoint]
      .concat(["--backend", "wasm", "--prompts-per-step", "2", "--samples-per-prompt", "2"])
      .concat(["--max-new-tokens", "6", "--out", join(checkpoint, "..", "runs")])
      .join(" ");
    const r = spawnSync("script", ["-qefc", `stty cols 120 rows 40; ${train}`, "/dev/null"], {
      encoding: "utf8",
      timeout: 120_000,
    });
    expect(r.status, r.stdout).toBe(0);
    // The bar was drawn (the raw output holds it); the final screen has every log line, the kept
    // step lines and the summary, and no bar.
    expect(r.stdout.replace(ANSI, "")).toMatch(
      /\[[█░]+\] [0-6]\/6 · \d+:\d\d elapsed · ETA (--|\d+:\d\d) · reward /,
    );
    const shown = screen(r.stdout.replace(/\r\n/g, "\n")).filter(Boolean);
    expect(shown.filter((l) => /^policy: now serving weights v\d/.test(l))).toHaveLength(7);
    expect(shown.filter((l) => /^step \d\/6 reward/.test(l)).map((l) => l.slice(0, 8))).toEqual([
      "step 5/6",
      "step 6/6",
    ]);
    expect(shown.some((l) => l.includes("█") || l.includes("░"))).toBe(false);
    // After the bar has gone: the summary, then the held-out report, then the run report's path.
    expect(shown.at(-7)).toMatch(/^run run-\S+ \(embedded\): 6 steps/);
    expect(shown.slice(-5)).toEqual([
      expect.stringMatching(/^held-out reward \(16 prompts × 4 samples\): /),
      expect.stringMatching(/^ {2}before: "/),
      expect.stringMatching(/^ {2}after: {2}"/),
      expect.stringMatching(/^held-out report: \S+held-out\.json$/),
      expect.stringMatching(/^run report: \S+report\.html \(\d+(\.\d)? kB\)$/),
    ]);
  }, 150_000);
});
