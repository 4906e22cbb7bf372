/**
 * The phases of a service process's cold start, as one log line each, so that how long a replica
 * takes to come back from zero (and where the time goes) is read from the process itself rather
 * than guessed from other output: `bench/cold-start.ts` spawns `rlaif serve <service>` and parses
 * these lines. Each line carries the wall-clock instant (epoch milliseconds, sub-millisecond), which
 * a parent process on the same machine compares with the instant it spawned the child, and the
 * time since this process started (Node's `performance.timeOrigin`).
 */

/**
 * The phases in the order they happen: `node` (Node's own bootstrap finished, before any of our
 * code ran), `modules` (the CLI and the service's modules are loaded, the command starts),
 * `backend` (the compute backend is initialised), `model` (the checkpoint's model is built),
 * `weights` (the latest published weights are fetched, verified and swapped in), `serving` (the
 * gRPC server is bound and its health service answers SERVING). A service logs only those that
 * apply to it: the Feedback and Rollout have no backend or weights.
 */
export const START_PHASES = ["node", "modules", "backend", "model", "weights", "serving"] as const;

/** One phase of {@link START_PHASES}. */
export type StartPhase = (typeof START_PHASES)[number];

/** A phase as parsed back from its line. */
export interface StartPhaseMark {
  service: string;
  phase: StartPhase;
  /** Wall-clock instant, epoch milliseconds. */
  atEpochMs: number;
}

/** The current wall-clock instant with sub-millisecond resolution (what `Date.now()` lacks). */
export function epochNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * The log line of `phase` of `service` reached at `atEpochMs` (default now), e.g.
 * `policy: start phase model at 1764770000123.4 (1234.5 ms since process start)`.
 */
export function startPhaseLine(service: string, phase: StartPhase, atEpochMs = epochNowMs()): string {
  const since = atEpochMs - performance.timeOrigin;
  return `${service}: start phase ${phase} at ${atEpochMs.toFixed(1)} (${since.toFixed(1)} ms since process start)`;
}

const LINE = /\b([a-z]+): start phase ([a-z]+) at (\d+(?:\.\d+)?) \(/;

/**
 * The phase a log line reports, or undefined for any other line. It finds the line inside a JSON
 * log object too (`--log-format json` keeps the text as `msg`).
 */
export function parseStartPhase(line: string): StartPhaseMark | undefined {
  const m = LINE.exec(line);
  if (!m || !(START_PHASES as readonly string[]).includes(m[2] as string)) return undefined;
  return { service: m[1] as string, phase: m[2] as StartPhase, atEpochMs: Number(m[3]) };
}

/**
 * The phases this process has already passed before any of our code could log them, as lines:
 * `node` at the end of Node's bootstrap (`performance.nodeTiming.bootstrapComplete`).
 */
export function bootstrapPhaseLine(service: string): string {
  return startPhaseLine(service, "node", performance.timeOrigin + performance.nodeTiming.bootstrapComplete);
}
