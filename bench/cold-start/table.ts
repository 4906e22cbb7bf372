/**
 * The cold-start report of bench/cold-start.ts: per case the median of each milestone over the
 * repeats (ms since the spawn) and its delta from the previous milestone the case has, the total
 * (first request answered), and whether the target case met its limit; as JSON and as a table.
 */
import { MILESTONES, type Milestone, type Milestones } from "./timed-start.js";

/** One case's medians. */
export interface CaseReport {
  name: string;
  service: string;
  /** Median ms since the spawn of every milestone this case reached (in MILESTONES order). */
  medianMs: Milestones;
  /** Median ms from the previous reached milestone (from the spawn for the first). */
  deltaMs: Milestones;
  /** Median ms from the spawn to the first request answered. */
  totalMs: number;
  /** Every start's milestones, as measured. */
  runs: Milestones[];
}

/** The whole report. */
export interface ColdStartReport {
  repeats: number;
  milestones: readonly Milestone[];
  cases: CaseReport[];
  target: { caseName: string; limitMs: number; totalMs: number | null; met: boolean | null };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const round1 = (x: number) => Math.round(x * 10) / 10;

/** Medians and deltas of every case, and the target's verdict (null when its case did not run). */
export function summarize(
  results: readonly { name: string; service: string; runs: Milestones[] }[],
  target: { caseName: string; limitMs: number },
  repeats: number,
): ColdStartReport {
  const cases = results.map(({ name, service, runs }) => {
    const medianMs: Milestones = {};
    const deltaMs: Milestones = {};
    let previous = 0;
    for (const m of MILESTONES) {
      const xs = runs.map((r) => r[m]).filter((x): x is number => x !== undefined);
      if (xs.length === 0) continue;
      const at = median(xs);
      medianMs[m] = round1(at);
      deltaMs[m] = round1(at - previous);
      previous = at;
    }
    return { name, service, medianMs, deltaMs, totalMs: medianMs.answered ?? Number.NaN, runs };
  });
  const t = cases.find((c) => c.name === target.caseName);
  return {
    repeats,
    milestones: MILESTONES,
    cases,
    target: { ...target, totalMs: t ? t.totalMs : null, met: t ? t.totalMs <= target.limitMs : null },
  };
}

/** The report as a text table: a row per case, a column per milestone ("ms (+delta)"). */
export function formatTable(report: ColdStartReport): string {
  const header = ["case", ...report.milestones, "total"];
  const rows = report.cases.map((c) => [
    c.name,
    ...report.milestones.map((m) =>
      c.medianMs[m] === undefined ? "-" : `${c.medianMs[m]?.toFixed(0)} (+${c.deltaMs[m]?.toFixed(0)})`,
    ),
    `${c.totalMs.toFixed(0)}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) => `| ${cells.map((x, i) => x.padEnd(widths[i] as number)).join(" | ")} |`;
  const out = [
    `cold start, ms since the spawn (+ from the previous phase), median of ${report.repeats}`,
    line(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...rows.map(line),
  ];
  const t = report.target;
  out.push(
    t.met === null
      ? `target ≤ ${t.limitMs} ms for ${t.caseName}: not measured (case not run)`
      : `target ≤ ${t.limitMs} ms for the default Policy (${t.caseName}): ${t.met ? "met" : "not met"} (${t.totalMs?.toFixed(0)} ms)`,
  );
  return `${out.join("\n")}\n`;
}
