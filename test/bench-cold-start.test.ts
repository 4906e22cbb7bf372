/**
 * The cold-start benchmark, shortened for CI (`--smoke`: one start per case, no GPT-2 124M case):
 * the documented command, on a real nats-server, reports every case with every phase its service
 * has, in the order they happen, and the default Policy's verdict against its target. No timing is
 * asserted. The full run is `npx tsx bench/cold-start.ts` (3 starts per case, 124M included).
 */
import { describe, expect, it } from "vitest";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { runBench } from "./helpers/run-bench.js";

const hasNatsServer = requireTool(TOOLS.natsServer);

/** The milestones each service reaches, in order (the Policy fetches the published weights). */
const EXPECTED: Record<string, string[]> = {
  "policy-default": [
    "process",
    "node",
    "modules",
    "backend",
    "model",
    "weights",
    "serving",
    "health",
    "answered",
  ],
  rollout: ["process", "node", "modules", "serving", "health", "answered"],
  feedback: ["process", "node", "modules", "model", "serving", "health", "answered"],
};

describe.skipIf(!hasNatsServer)("cold-start benchmark", () => {
  it("cold-start benchmark - a smoke run reports every phase of every case, in order", () => {
    const r = runBench("cold-start.ts", ["--smoke", "--json"], 300_000);
    expect(r.stderr).not.toMatch(/could not swap|Error/);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    expect(report.repeats).toBe(1);
    expect(report.cases.map((c: { name: string }) => c.name)).toEqual(Object.keys(EXPECTED));
    for (const c of report.cases) {
      const reached = (report.milestones as string[]).filter((m) => c.medianMs[m] !== undefined);
      expect(reached, c.name).toEqual(EXPECTED[c.name]);
      const times = reached.map((m) => c.medianMs[m] as number);
      expect(
        times.every((t, i) => t >= 0 && (i === 0 || t >= (times[i - 1] as number))),
        c.name,
      ).toBe(true);
      expect(c.totalMs).toBe(c.medianMs.answered);
      expect(c.runs).toHaveLength(1);
    }
    expect(report.target.caseName).toBe("policy-default");
    expect(report.target.limitMs).toBe(5000);
    expect(report.target.met).toBe(report.target.totalMs <= 5000);
  }, 360_000);

  it("cold-start benchmark - the table has a row per case, a column per phase and the verdict", () => {
    const r = runBench("cold-start.ts", ["--smoke", "--only", "feedback"], 120_000);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[1]).toMatch(
      /^\| case +\| process +\| node +\| modules .*\| serving +\| health +\| answered +\| total +\|$/,
    );
    expect(lines[3]).toMatch(/^\| feedback +\| \d+ \(\+\d+\) .*\| - +\|/);
    expect(lines.at(-1)).toBe("target ≤ 5000 ms for policy-default: not measured (case not run)");
  }, 180_000);

  it("cold-start benchmark - a bad flag exits 2 naming it", () => {
    const r = runBench("cold-start.ts", ["--only", "optimizer"], 60_000);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--only: unknown case 'optimizer'/);
  }, 60_000);
});
