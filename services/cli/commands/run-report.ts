/**
 * `rlaif report <run dir>`: the run's report as one self-contained HTML file
 * (services/optimizer/run-report.ts, docs/run-report.md). Why a command of its own: `rlaif
 * train` writes the report at the end of its run, but a run driven by `rlaif run`, one still
 * running, or one copied off another machine needs it made from its directory alone.
 */

import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { ConfigError } from "../../core/src/errors.js";
import { writeRunReport } from "../../optimizer/run-report.js";
import type { CommandRun } from "../args.js";

/** "52.1 kB" */
export function kilobytes(bytes: number): string {
  return `${(bytes / 1000).toFixed(1)} kB`;
}

/** What `rlaif report` does (its command line is declared in specs.ts). */
export const runReportCommand: CommandRun = {
  async run({ flags, positionals }) {
    const dir = positionals[0] ?? "";
    const out = flags.out;
    if (out !== undefined && (typeof out !== "string" || out === ""))
      throw new ConfigError("--out: give the HTML file to write, e.g. --out report.html");
    if (typeof out === "string" && !existsSync(dirname(out)))
      throw new ConfigError(`--out ${out}: the directory ${dirname(out)} does not exist`);
    const written = typeof out === "string" ? writeRunReport(dir, out) : writeRunReport(dir);
    process.stdout.write(`rlaif report: ${written.path} (${kilobytes(written.bytes)})\n`);
  },
};
