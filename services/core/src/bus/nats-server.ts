/**
 * Start a throwaway `nats-server` with JetStream, for tests and for `rlaif up` (local cluster mode).
 *
 * Why spawn the binary instead of requiring a running server: tests and a local cluster must not
 * depend on shared state, so each gets its own server on a free loopback port with its own store
 * directory, and removes both when done.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RlaifError } from "../errors.js";
import { authorizationConfig, type NatsUser } from "./nats-auth.js";

/** Options of `startNatsServer`. */
export interface NatsServerOptions {
  /** JetStream store directory. Default: a new temp dir, removed by `stop()` (a given one is kept). */
  storeDir?: string;
  /** Port to listen on (loopback only). Default: a free port chosen by the OS. */
  port?: number;
  /** How long to wait for the server to become ready. Default 10 s. */
  startTimeoutMs?: number;
  /**
   * Users with permissions (nats-auth.ts `serviceUsers`): written to a config file readable only
   * by this user, and then no client connects without one of them. Default: no authentication.
   */
  users?: readonly NatsUser[];
  /**
   * HTTP monitoring port (`-m`, loopback like the client port): `/varz` counts the server's
   * messages and bytes in and out, which the replica benchmark turns into per-trajectory costs.
   * Default: no monitoring endpoint.
   */
  monitorPort?: number;
}

/** A running server: its client URL and how to stop it. */
export interface NatsServerHandle {
  /** e.g. `nats://127.0.0.1:41234`, ready for `NatsBus.connect`. */
  readonly url: string;
  /** Process id of the server, so a supervisor can name it. */
  readonly pid: number;
  /**
   * Resolves when the server process exits, for any reason (stop() included), with its exit code
   * or signal: a supervisor (`rlaif up`) restarts a server that died on the same port and store.
   */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kill the server (SIGTERM, then SIGKILL after 5 s) and remove the temp store dir. Idempotent. */
  stop(): Promise<void>;
}

const INSTALL_HINT = "install it (Debian/Ubuntu: `apt-get install nats-server`) or configure a NATS URL";

/**
 * Start `nats-server -a 127.0.0.1 -p <port> -js -sd <dir>` from PATH and resolve once it is ready
 * for clients. Throws `RlaifError` with install instructions when the binary is missing, and
 * with the server's output when it exits or does not come up in time.
 */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts, opts.port ?? (await freePort()));
    } catch (err) {
      // A port picked by freePort() can be taken before the server binds it: pick another.
      const portTaken = /listening on port|address already in use/i.test((err as Error).message);
      if (opts.port !== undefined || attempt >= 3 || !portTaken) throw err;
    }
  }
}

async function startOnce(opts: NatsServerOptions, port: number): Promise<NatsServerHandle> {
  const ownsDir = opts.storeDir === undefined;
  const storeDir = opts.storeDir ?? (await mkdtemp(join(tmpdir(), "rlaif-nats-")));
  // The config holds passwords: its own directory, mode 0600, removed by stop().
  const confDir = opts.users ? await mkdtemp(join(tmpdir(), "rlaif-nats-conf-")) : undefined;
  const confArgs: string[] = [];
  if (confDir && opts.users) {
    const conf = join(confDir, "nats.conf");
    await writeFile(conf, authorizationConfig(opts.users), { mode: 0o600 });
    confArgs.push("-c", conf);
  }
  const monitor = opts.monitorPort === undefined ? [] : ["-m", String(opts.monitorPort)];
  const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir, ...monitor, ...confArgs];
  const child = spawn("nats-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-4000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  // A test runner or CLI that dies without calling stop() must not leave the server running.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const cleanup = async () => {
    process.removeListener("exit", killOnExit);
    await terminate(child);
    if (ownsDir) await rm(storeDir, { recursive: true, force: true });
    if (confDir) await rm(confDir, { recursive: true, force: true });
  };

  try {
    await waitReady(child, opts.startTimeoutMs ?? 10_000, () => output);
  } catch (err) {
    await cleanup();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  return {
    url: `nats://127.0.0.1:${port}`,
    pid: child.pid ?? 0,
    exited,
    stop: () => {
      stopped ??= cleanup();
      return stopped;
    },
  };
}

/**
 * Ask the OS for a free loopback port. (Another process may take it before the server binds.)
 * Exported for callers that must know a port before starting a server on it, e.g. to restart a
 * process on the same address.
 */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Resolve when this child logs "Server is ready" (printed after JetStream is up and the client
 * listener is open). Its own log, not a TCP probe: a probe could reach another server that already
 * holds the port while ours fails to bind.
 */
function waitReady(child: ChildProcess, timeoutMs: number, output: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: RlaifError) => {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.off("error", onError);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve();
    };
    const onData = () => {
      if (output().includes("Server is ready")) done();
    };
    const onError = (err: NodeJS.ErrnoException) =>
      done(
        err.code === "ENOENT"
          ? new RlaifError(`nats-server is not on PATH; ${INSTALL_HINT}`, { cause: err })
          : new RlaifError(`cannot start nats-server: ${err.message}`, { cause: err }),
      );
    const onExit = (code: number | null, signal: string | null) =>
      done(
        new RlaifError(`nats-server exited (${signal ?? `code ${code}`}) before it was ready:\n${output()}`),
      );
    const timer = setTimeout(
      () => done(new RlaifError(`nats-server was not ready within ${timeoutMs} ms:\n${output()}`)),
      timeoutMs,
    );
    child.stderr?.on("data", onData);
    child.once("error", onError);
    child.once("exit", onExit);
  });
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}
