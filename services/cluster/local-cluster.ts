/**
 * A local distributed cluster for `rlaif up`: a `nats-server` from PATH on a free port and one
 * `rlaif serve` process per service, each on its own free port. Everything is torn down by
 * `close()` (SIGTERM, then SIGKILL after a grace period), and on a failed start. The server
 * admits only one user per service, with that service's subject permissions and a fresh random
 * password passed in the service's environment (never on its command line).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { NATS_PASSWORD_ENV, NATS_USER_ENV, type NatsUser, serviceUsers } from "../core/src/bus/nats-auth.js";
import { startNatsServer } from "../core/src/bus/nats-server.js";
import { REPO_ROOT, type RlaifConfig } from "../core/src/config/settings.js";
import { RlaifError } from "../core/src/errors.js";
import { CONTROL_TOKEN_ENV, resolveControlToken } from "../core/src/grpc/control-token.js";
import { clusterWeightsKeys } from "../core/src/weights/weights-keys.js";

/** Path of the `rlaif` entry point the service processes run. */
const BIN = `${REPO_ROOT}bin/rlaif.js`;

/** How long a service may take to start listening (model load included). */
const START_TIMEOUT_MS = 120_000;

/** A running local cluster. */
export interface LocalCluster {
  natsUrl: string;
  /** host:port of each service ("feedback" is the external one when configured). */
  addresses: { policy: string; rollout: string; feedback: string; optimizer: string };
  /** Process ids of the service processes, by service. */
  pids: Record<string, number>;
  close(): Promise<void>;
}

interface ServiceProcess {
  child: ChildProcess;
  address: string;
}

function startService(
  name: string,
  args: string[],
  log: (line: string) => void,
  env: Readonly<Record<string, string>> = {},
): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [BIN, "serve", name, "--port", "0", "--host", "127.0.0.1", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const tail: string[] = [];
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
    log(`[${name}] ${line}`);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new RlaifError(`${name} did not start within ${START_TIMEOUT_MS / 1000} s:\n${tail.join("\n")}`),
      );
    }, START_TIMEOUT_MS);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const m = /listening on (\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ child, address: m[1] as string });
      } else log(`[${name}] ${line}`);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(
        new RlaifError(`${name} exited (${signal ?? `code ${code}`}) before serving:\n${tail.join("\n")}`),
      );
    });
  });
}

async function stopProcess(p: ChildProcess, graceMs: number): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once("exit", () => r()));
  p.kill("SIGTERM");
  const timer = setTimeout(() => p.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** The environment that makes a service connect to NATS as `user`. */
function natsEnv(user: NatsUser): Record<string, string> {
  return { [NATS_USER_ENV]: user.user, [NATS_PASSWORD_ENV]: user.password };
}

/** The TLS flags of every service: the same files for all, as one cluster has one CA. */
function tlsFlags(s: RlaifConfig["services"]): string[] {
  const given: [string, string][] = [
    ["--tls-cert", s.tlsCert],
    ["--tls-key", s.tlsKey],
    ["--tls-ca", s.tlsCa],
    ["--tls-client-auth", s.tlsClientAuth === "none" ? "" : s.tlsClientAuth],
  ];
  return given.flatMap(([flag, value]) => (value ? [flag, value] : []));
}

/** Start NATS and the four services (three when the feedback service is external). */
export async function startLocalCluster(
  config: RlaifConfig,
  log: (line: string) => void,
): Promise<LocalCluster> {
  // Signed weights: the configured key pair, or one made for this cluster (removed on close).
  const keys = await clusterWeightsKeys(config.services);
  const users = serviceUsers();
  const nats = await startNatsServer({ users: Object.values(users) }).catch(async (err: unknown) => {
    await keys.dispose();
    throw err;
  });
  const procs: ServiceProcess[] = [];
  const close = async () => {
    await Promise.all(procs.map((p) => stopProcess(p.child, 10_000)));
    await nats.stop();
    await keys.dispose();
  };
  const s = config.services;
  const tls = tlsFlags(s);
  const token = resolveControlToken(s);
  // Each service gets the flags its own `rlaif serve <service>` takes.
  const natsFlags = ["--nats", nats.url];
  const model = ["--checkpoint", s.checkpoint, "--backend", s.backend];
  const track = async (p: Promise<ServiceProcess>) => {
    const sp = await p;
    procs.push(sp);
    return sp;
  };
  try {
    const [feedback, policy] = await Promise.all([
      s.feedbackAddress ? null : track(startService("feedback", tls, log)),
      track(
        startService(
          "policy",
          [
            ...natsFlags,
            ...model,
            "--policy-batch-rows",
            String(s.policyBatchRows),
            "--policy-queue-rows",
            String(s.policyQueueRows),
            "--weights-verify-key",
            keys.verifyKey,
            ...tls,
          ],
          log,
          natsEnv(users.policy),
        ),
      ),
    ]);
    const feedbackAddress = s.feedbackAddress || (feedback as ServiceProcess).address;
    const [rollout, optimizer] = await Promise.all([
      track(
        startService(
          "rollout",
          [
            ...natsFlags,
            "--rpc-timeout-ms",
            String(s.rpcTimeoutMs),
            "--rollout-concurrency",
            String(s.rolloutConcurrency),
            "--policy-address",
            policy.address,
            "--feedback-address",
            feedbackAddress,
            ...tls,
          ],
          log,
          natsEnv(users.rollout),
        ),
      ),
      track(
        startService(
          "optimizer",
          [
            ...natsFlags,
            ...model,
            "--out",
            config.out,
            "--step-timeout-ms",
            String(s.stepTimeoutMs),
            "--feedback-address",
            feedbackAddress,
            "--weights-signing-key",
            keys.signingKey,
            "--weights-retention",
            String(s.weightsRetention),
            ...tls,
          ],
          log,
          { ...natsEnv(users.optimizer), ...(token ? { [CONTROL_TOKEN_ENV]: token } : {}) },
        ),
      ),
    ]);
    const pids: Record<string, number> = {};
    for (const [name, p] of Object.entries({ feedback, policy, rollout, optimizer })) {
      if (p?.child.pid) pids[name] = p.child.pid;
    }
    return {
      natsUrl: nats.url,
      addresses: {
        policy: policy.address,
        rollout: rollout.address,
        feedback: feedbackAddress,
        optimizer: optimizer.address,
      },
      pids,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
