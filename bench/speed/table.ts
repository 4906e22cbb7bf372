/**
 * The figures as a plain-text table: one row per figure, a column per side, the ratios
 * rlaif/PyTorch and the cross-check, with the run's context above it.
 */
import { CHECK_NOTE, type Figure } from "./figures.js";

/** Three significant digits, without exponent for the magnitudes a benchmark prints. */
function num(x: number | undefined): string {
  if (x === undefined) return "—";
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toPrecision(3);
}

/** The table of `figures` for PyTorch sides `threads`, under the `header` lines. */
export function formatTable(
  figures: readonly Figure[],
  threads: readonly number[],
  header: readonly string[],
): string {
  const sides = threads.map((t) => `torch${t}`);
  const more = threads.filter((t) => t > 1 && figures.some((f) => f.values[`rlaif${t}`] !== undefined));
  const head = [
    "figure",
    "rlaif",
    ...more.map((t) => `rlaif ${t}t`),
    ...threads.map((t) => `PyTorch ${t}t`),
    ...threads.map((t) => `ratio ${t}t`),
    "check",
  ];
  const rows = figures.map((f) => [
    `${f.label} (${f.unit})`,
    num(f.values.rlaif),
    ...more.map((t) => num(f.values[`rlaif${t}`])),
    ...sides.map((s) => num(f.values[s])),
    ...sides.map((s) => (f.ratios?.[s] === undefined ? "" : `${num(f.ratios[s])}×`)),
    f.check === undefined ? "" : f.check.toExponential(1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)))
      .join("  ");
  return [
    ...header,
    "ratio = rlaif / PyTorch in the row's unit (ms and MB: below 1 is rlaif ahead; tok/s and GFLOP/s: above 1 is)",
    ...(more.length > 0
      ? [
          `rlaif: one OpenBLAS thread, as the embedded services run; rlaif ${more.map((t) => `${t}t`).join(", ")}: the learner step on that many (an Optimizer on a node of its own); each ratio compares equal thread counts`,
        ]
      : []),
    CHECK_NOTE,
    "",
    line(head),
    ...rows.map(line),
    "",
  ].join("\n");
}
