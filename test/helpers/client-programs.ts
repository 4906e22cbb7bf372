/**
 * Shared by the tests of the example clients in other languages (examples/python-client and
 * examples/go-client): both run a program against a local cluster and print the same lines, so
 * spawning a program, finding which tools a machine lacks and reading that output live here once.
 */
import { execFileSync, spawn } from "node:child_process";
import { expect } from "vitest";
import { OptimizerService, RunState } from "../../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { createClient } from "../../services/core/src/grpc/client.js";

/** How a program ended and what it printed. */
export interface ProgramResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Options of `runProgram`. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Killed (SIGKILL) after this long; default 120 s. */
  timeoutMs?: number;
  /** Send SIGINT (a user's Ctrl-C) once stdout matches this. */
  interruptWhen?: RegExp;
}

/** Run a program to its end, collecting its output. */
export function runProgram(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<ProgramResult> {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let interrupted = false;
  child.stdout.on("data", (b: Buffer) => {
    stdout += b.toString();
    if (!interrupted && options.interruptWhen?.test(stdout)) {
      interrupted = true;
      child.kill("SIGINT");
    }
  });
  child.stderr.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A command that must run (exit 0) for a test to be possible, and what to install otherwise. */
export interface ToolCheck {
  what: string;
  command: string;
  args: readonly string[];
}

/** The `what` of every check whose command is missing or fails. */
export function missingTools(checks: readonly ToolCheck[]): string[] {
  return checks
    .filter((c) => {
      try {
        execFileSync(c.command, c.args, { stdio: "ignore", timeout: 30_000 });
        return false;
      } catch {
        return true;
      }
    })
    .map((c) => c.what);
}

/** One printed row of a client's reward curve (the numbers are printed with 4 decimals). */
export interface CurveRow {
  step: number;
  meanReward: number;
  kl: number;
}

/** What a client printed about its training run. */
export interface ClientRun {
  runId: string;
  curve: CurveRow[];
  state: string;
  steps: number;
  trajectories: number;
}

/** Read the run lines both example clients print (see their READMEs); throws when one is missing. */
export function parseClientRun(stdout: string): ClientRun {
  const lines = stdout.split("\n");
  const curve = lines
    .map((l) => /^\s*(\d+)\s+(-?\d+\.\d{4})\s+(-?\d+\.\d{4})$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ step: Number(m[1]), meanReward: Number(m[2]), kl: Number(m[3]) }));
  const final = /^final: run (\S+) ([A-Z_]+) after (\d+) steps, (\d+) trajectories/m.exec(stdout);
  if (!final) throw new Error(`no "final:" line in the client's output:\n${stdout}`);
  return {
    runId: final[1] as string,
    curve,
    state: final[2] as string,
    steps: Number(final[3]),
    trajectories: Number(final[4]),
  };
}

/**
 * Check a client's printed run against what the Optimizer itself reports for that run id: the
 * state, the step count, the trajectories and the last step's reward and KL.
 */
export async function expectRunAsServerReports(run: ClientRun, optimizerAddress: string): Promise<void> {
  const optimizer = createClient(OptimizerService, optimizerAddress, { defaultTimeoutMs: 10_000 });
  try {
    const status = await optimizer.getStatus({ runId: run.runId });
    expect(status.state).toBe(RunState.SUCCEEDED);
    expect(run.state).toBe("SUCCEEDED");
    expect(run.steps).toBe(status.step);
    expect(run.trajectories).toBe(status.summary?.trajectories);
    const last = run.curve.at(-1);
    expect(last?.step).toBe(Number(status.lastMetrics?.step));
    // Printed with 4 decimals: equal to the server's double up to rounding.
    expect(Math.abs(Number(last?.meanReward) - Number(status.lastMetrics?.meanReward))).toBeLessThan(
      5.001e-5,
    );
    expect(Math.abs(Number(last?.kl) - Number(status.lastMetrics?.kl))).toBeLessThan(5.001e-5);
  } finally {
    optimizer.close();
  }
}

/**
 * Check what a client did on Ctrl-C during a run: exit 130, say on stderr that CancelRun stopped
 * the run, print its final CANCELLED state, and the Optimizer agrees on the state and step.
 */
export async function expectInterruptCancelledRun(
  out: ProgramResult,
  optimizerAddress: string,
): Promise<void> {
  expect(out.code, out.stderr).toBe(130);
  const said = /^interrupted: CancelRun stopped run (\S+) after step (\d+) \(CANCELLED\)$/m.exec(out.stderr);
  expect(said, out.stderr).not.toBeNull();
  const [, runId, step] = said as RegExpExecArray;
  expect(out.stdout).toContain(`final: run ${runId} CANCELLED after ${step} steps`);
  const optimizer = createClient(OptimizerService, optimizerAddress, { defaultTimeoutMs: 10_000 });
  try {
    const status = await optimizer.getStatus({ runId: runId as string });
    expect(status.state).toBe(RunState.CANCELLED);
    expect(status.step).toBe(Number(step));
  } finally {
    optimizer.close();
  }
}
