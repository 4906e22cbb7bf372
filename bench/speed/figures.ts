/**
 * The benchmark's results as one list of figures (one table row each: a value per side, the
 * ratios rlaif/PyTorch and the cross-check of that row), the single source of both the printed
 * table and the `--json` report, so the two can never disagree.
 */
import { type BySide, type KindResult, rlaifSideName } from "./kind-bench.js";
import type { TrainResult } from "./train-bench.js";

/** One row. */
export interface Figure {
  /** Stable id, e.g. `learnerMs.transformer` (tests and scripts read figures by it). */
  key: string;
  label: string;
  unit: string;
  /**
   * Value per side: `rlaif`, `rlaif2` (learner rows: two OpenBLAS threads), `torch1`, `torch2`
   * (a side is absent where it has no such figure).
   */
  values: BySide;
  /**
   * rlaif / PyTorch in the row's unit per PyTorch side, at the same thread count where rlaif has
   * that side (absent for shares and rlaif-only rows).
   */
  ratios?: BySide;
  /** How far rlaif and PyTorch differ on this row's inputs (see `checkNote`). */
  check?: number;
}

/** Everything the figures are made of. */
export interface Results {
  rows: number;
  maxNewTokens: number;
  kinds: Record<string, KindResult>;
  /** PyTorch's n³ product per thread count: the machine's practical peak. */
  peak: { n: number; gflops: BySide };
  /** A product at the Transformer's MLP shape [rows·positions, C] × [C, 4C], on every side. */
  modelMatmul?: { shape: readonly number[]; gflops: BySide };
  /** Transformer learner step: GFLOP per step (flops.ts) and the batch positions it was counted for. */
  flops?: { gflopPerStep: number; positions: number };
  /** `rlaif train` embedded on the default policy (the BPE GPT-2). */
  train?: TrainResult;
  /** The same on the byte-level Transformer: the run the speed targets were first measured on. */
  trainByte?: TrainResult;
}

/** What the check column means. */
export const CHECK_NOTE =
  "check: learner rows max relative difference of logits, loss, grad norm, entropy and the loss after one update; log-prob rows max |Δ log p| in nats";

/**
 * rlaif / PyTorch per PyTorch side, like for like: PyTorch on n threads against rlaif on n
 * OpenBLAS threads where that side was measured (`rlaif2`: the learner step), else `rlaif`.
 */
function withRatios(values: BySide): BySide | undefined {
  if (values.rlaif === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(values)
      .filter(([side]) => side.startsWith("torch"))
      .map(([side, v]) => {
        const ours = values[rlaifSideName(Number(side.slice("torch".length)))] ?? (values.rlaif as number);
        return [side, ours / v];
      }),
  );
}

function figure(key: string, label: string, unit: string, values: BySide, check?: number): Figure {
  const ratios = withRatios(values);
  return {
    key,
    label,
    unit,
    values,
    ...(ratios ? { ratios } : {}),
    ...(check !== undefined ? { check } : {}),
  };
}

/** The learner check of a kind: the worst of its relative figures. */
function learnerCheck(k: KindResult): number {
  const c = k.check;
  return Math.max(c.logits, c.loss, c.gradNorm, c.entropy, c.lossAfterUpdate);
}

const scale = (v: BySide, f: (x: number) => number) =>
  Object.fromEntries(Object.entries(v).map(([k, x]) => [k, f(x)]));

/** Every figure of a run, in table order. */
export function buildFigures(r: Results): Figure[] {
  const kinds = Object.entries(r.kinds);
  const positions = (k: KindResult) => k.batch.positions;
  const out: Figure[] = [
    ...kinds.map(([kind, k]) =>
      figure(`learnerMs.${kind}`, `learner step, ${kind}`, "ms", k.learnerMs, learnerCheck(k)),
    ),
    ...kinds.map(([kind, k]) =>
      figure(
        `samplingTokensPerSecond.${kind}`,
        `sampling ${r.rows}×${r.maxNewTokens}, ${kind}`,
        "tok/s",
        k.samplingTokensPerSecond,
        k.check.sampling,
      ),
    ),
    ...kinds.map(([kind, k]) =>
      figure(
        `logprobsMs.${kind}`,
        `reference log-probs ${r.rows}×${positions(k)}, ${kind}`,
        "ms",
        k.logprobsMs,
        k.check.logprobs,
      ),
    ),
  ];
  const gpt = r.kinds.transformer;
  const flops = r.flops;
  if (gpt && flops) {
    const gflops = scale(gpt.learnerMs, (ms) => flops.gflopPerStep / (ms / 1000));
    out.push(
      figure(
        "learnerGflops.transformer",
        `learner step, transformer, ${flops.gflopPerStep.toFixed(2)} GFLOP`,
        "GFLOP/s",
        gflops,
      ),
    );
    for (const t of [1, 2]) {
      const peak = r.peak.gflops[`torch${t}`];
      if (peak === undefined) continue;
      out.push({
        key: `learnerPeakShare${t}.transformer`,
        label: `  as a share of the ${t}-thread sgemm peak`,
        unit: "%",
        values: scale(gflops, (g) => (100 * g) / peak),
      });
    }
  }
  out.push(
    figure("sgemmPeakGflops", `sgemm peak, ${r.peak.n}³ float32, best round`, "GFLOP/s", r.peak.gflops),
  );
  if (r.modelMatmul) {
    const shape = r.modelMatmul.shape.join("×");
    out.push(
      figure("matmulGflops.mlp", `matmul at the MLP's shape ${shape}`, "GFLOP/s", r.modelMatmul.gflops),
    );
  }
  for (const [kind, k] of kinds) {
    out.push(
      figure(`rssMb.${kind}`, `RSS after a learner step, ${kind}`, "MB", {
        rlaif: k.rssMb.rlaif,
        ...Object.fromEntries(
          Object.keys(k.learnerMs)
            .filter((s) => s.startsWith("torch"))
            .map((s) => [s, k.rssMb.torch]),
        ),
      }),
    );
  }
  if (r.train) out.push(...trainFigures("train", "rlaif train", r.train));
  if (r.trainByte) out.push(...trainFigures("trainByte", "rlaif train (byte Transformer)", r.trainByte));
  return out;
}

/** The figures of one embedded run, keyed `<prefix>.stepsPerSecond` etc. */
function trainFigures(prefix: string, name: string, t: TrainResult): Figure[] {
  const only = (key: string, label: string, unit: string, v: number): Figure => ({
    key: `${prefix}.${key}`,
    label: `${name}, ${label}`,
    unit,
    values: { rlaif: v },
  });
  return [
    only("stepsPerSecond", `embedded, ${measured(t)}`, "steps/s", t.stepsPerSecond),
    only("cpuPerWall", "cpu/wall (process tree)", "cores", t.cpuPerWall),
    only("firstStepSeconds", "first step (start-up included)", "s", t.firstStepSeconds),
    only("peakRssMb", "peak RSS", "MB", t.peakRssMb),
    only("rssGrowthMbPerStep", "RSS growth per step", "MB", rssGrowth(t.rssMbAfterStep)),
  ];
}

/** Which steps the rate is over ("steps 2–7", or "step 1" of a one-step run). */
function measured(t: TrainResult): string {
  const from = t.firstMeasuredStep;
  const to = from + t.measuredSteps - 1;
  return from === to ? `step ${from}` : `steps ${from}–${to}`;
}

/** Mean RSS growth per step after the first (0 for a one-step run). */
function rssGrowth(rss: readonly number[]): number {
  return rss.length < 2 ? 0 : ((rss.at(-1) as number) - (rss[0] as number)) / (rss.length - 1);
}
