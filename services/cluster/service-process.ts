/**
 * The child processes of `rlaif up`: one `rlaif serve <service>` (or a nats-server) as a
 * {@link ProcessInstance} the supervisor can watch and stop. Every child gets a guard: a tiny
 * `sh` that holds a pipe from `rlaif up` and, when that pipe closes because `rlaif up` died
 * without stopping it (kill -9, OOM), sends the child SIGTERM (SIGKILL after the grace). Why a
 * guard and not the child watching its parent: it works the same for nats-server, which cannot
 * be taught to, and it costs the services nothing.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import { REPO_ROOT } from "../core/src/config/settings.js";
import { RlaifError } from "../core/src/errors.js";
import type { ExitStatus, ProcessInstance } from "./supervisor.js";

/** Path of the `rlaif` entry point the service processes run. */
const BIN = `${REPO_ROOT}bin/rlaif.js`;

/** How long a service may take to start listening (model load included). */
export const START_TIMEOUT_MS = 120_000;

/**
 * Grace between SIGTERM and SIGKILL: the Kubernetes default (terminationGracePeriodSeconds),
 * which every `rlaif serve` drains within.
 */
export const STOP_GRACE_MS = 30_000;

/** A running `rlaif serve` process and where it listens. */
export interface ServiceInstance extends ProcessInstance {
  /** host:port, the same on every restart. */
  readonly address: string;
  readonly port: number;
}

/** `read` returns when the pipe from `rlaif up` closes: then TERM the pid ($1), KILL after $2 s. */
const GUARD_SCRIPT =
  'read _; kill -TERM "$1" 2>/dev/null; i=0; while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$2" ]; do sleep 1; i=$((i+1)); done; kill -KILL "$1" 2>/dev/null';

/** Start the guard of process `pid`; kill the returned process once `pid` has exited. */
function guard(pid: number): ChildProcess {
  const g = spawn("sh", ["-c", GUARD_SCRIPT, "rlaif-guard", String(pid), String(STOP_GRACE_MS / 1000)], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: true,
  });
  g.on("error", () => undefined);
  g.stdin?.on("error", () => undefined);
  // Neither the guard nor its pipe may keep `rlaif up` from exiting.
  g.unref();
  (g.stdin as Socket | null)?.unref();
  return g;
}

/**
 * Wrap a process (a child, or a nats-server by its pid) as a ProcessInstance with a guard.
 * `terminate` sends SIGTERM and, after `graceMs`, SIGKILL.
 */
export function guardedInstance(
  pid: number,
  exited: Promise<ExitStatus>,
  terminate: (graceMs: number) => void,
): ProcessInstance {
  const g = guard(pid);
  void exited.then(() => g.kill());
  return {
    pid,
    exited,
    async stop(graceMs) {
      terminate(graceMs);
      return exited;
    },
  };
}

/** A spawned child as a guarded ProcessInstance (stop: SIGTERM, SIGKILL after the grace). */
export function childInstance(child: ChildProcess): ProcessInstance {
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  return guardedInstance(child.pid ?? 0, exited, (graceMs) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    void exited.then(() => clearTimeout(timer));
  });
}

/**
 * Start `rlaif serve <name> --port <port> --host 127.0.0.1 …args` and resolve once it prints
 * "listening on host:port". Its stderr goes to `log` as `[name] line`. Rejects with its last
 * log lines when it exits first or does not listen within {@link START_TIMEOUT_MS}; `abort`
 * stops it (a cluster closing while it starts).
 */
export function startServiceProcess(
  name: string,
  port: number,
  args: readonly string[],
  log: (line: string) => void,
  abort?: AbortSignal,
  env: Readonly<Record<string, string>> = {},
): Promise<ServiceInstance> {
  const child = spawn(
    process.execPath,
    [BIN, "serve", name, "--port", String(port), "--host", "127.0.0.1", ...args],
    // Its own process group: a Ctrl-C in the terminal reaches `rlaif up` alone, which stops the
    // services in order instead of racing them. Secrets (its NATS password, the control token)
    // travel in its environment, never on its command line.
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env }, detached: true },
  );
  const instance = childInstance(child);
  const tail: string[] = [];
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
    log(`[${name}] ${line}`);
  });
  const onAbort = () => void instance.stop(STOP_GRACE_MS);
  abort?.addEventListener("abort", onAbort, { once: true });
  if (abort?.aborted) onAbort();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void instance.stop(0);
      reject(
        new RlaifError(`${name} did not start within ${START_TIMEOUT_MS / 1000} s:\n${tail.join("\n")}`),
      );
    }, START_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      abort?.removeEventListener("abort", onAbort);
    };
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const m = /listening on (\S+):(\d+)$/.exec(line);
      if (m) {
        done();
        resolve({ ...instance, address: `${m[1]}:${m[2]}`, port: Number(m[2]) });
      } else log(`[${name}] ${line}`);
    });
    void instance.exited.then((status) => {
      done();
      const how = status.signal ?? `code ${status.code}`;
      reject(new RlaifError(`${name} exited (${how}) before serving:\n${tail.join("\n")}`));
    });
  });
}
