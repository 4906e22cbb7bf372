/**
 * `rlaif serve <service>`: one service as its own process, as in a Kubernetes pod. Prints
 * "<service> listening on <address>" on stdout once it serves, and shuts down gracefully on
 * SIGTERM/SIGINT (in-flight calls finish, the worker stops after its job). A port in use is
 * refused before any model loads. It listens on 127.0.0.1 unless `--host` says otherwise (a pod
 * passes `--host 0.0.0.0`), with the TLS, control token and NATS user the settings give.
 */
import { once } from "node:events";
import type { Bus } from "../../core/src/bus/bus.js";
import { natsClientAuth } from "../../core/src/bus/nats-auth.js";
import { NatsBus } from "../../core/src/bus/nats-bus.js";
import type { RlaifConfig } from "../../core/src/config/settings.js";
import { ConfigError } from "../../core/src/errors.js";
import { resolveControlToken } from "../../core/src/grpc/control-token.js";
import { type GrpcSecurity, grpcSecurity } from "../../core/src/grpc/credentials.js";
import { startFeedbackServer } from "../../feedback/main.js";
import { startOptimizerServer } from "../../optimizer/main.js";
import { startPolicyServer } from "../../policy/main.js";
import { startRolloutServer } from "../../rollout/main.js";
import type { CommandRun } from "../args.js";
import { checkPortFree, portInUse } from "../preflight.js";
import { SERVICE_NAMES } from "../specs.js";
import { requireModel } from "./shared-flags.js";

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A started service: where it listens and how to stop it. */
interface Served {
  address: string;
  close(): Promise<void>;
}

/** This service's connection to NATS, as its own user when the settings name one. */
function openBus(name: string, config: RlaifConfig): Promise<Bus> {
  const s = config.services;
  return NatsBus.connect(s.natsUrl, { name: `rlaif-${name}`, auth: natsClientAuth(s) });
}

function needBus(name: string, config: RlaifConfig, why: string): Promise<Bus> {
  if (!config.services.natsUrl) throw new ConfigError(`serve ${name} needs --nats <url> ${why}`);
  return openBus(name, config);
}

/** Start service `name` on host:port with the configured settings. */
async function startService(
  name: string,
  config: RlaifConfig,
  host: string,
  port: number,
  security: GrpcSecurity,
): Promise<Served> {
  const s = config.services;
  if (name === "feedback") {
    const server = await startFeedbackServer({ host, port, security, log });
    return { address: server.address, close: () => server.shutdown(5000) };
  }
  if (name === "policy") {
    requireModel(config);
    const bus = s.natsUrl ? await openBus(name, config) : undefined;
    const policy = await startPolicyServer({
      host,
      port,
      security,
      checkpoint: s.checkpoint,
      backend: s.backend,
      batchRows: s.policyBatchRows,
      queueRows: s.policyQueueRows,
      weightsVerifyKey: s.weightsVerifyKey,
      log,
      ...(bus ? { bus } : {}),
    });
    return {
      address: policy.server.address,
      close: async () => {
        await policy.close();
        await bus?.close();
      },
    };
  }
  if (name === "rollout") {
    if (!s.policyAddress)
      throw new ConfigError("serve rollout needs --policy-address <host:port> of a Policy service");
    if (!s.feedbackAddress) {
      throw new ConfigError(
        "serve rollout needs --feedback-address <host:port> of a FeedbackService (built-in: 'rlaif serve feedback')",
      );
    }
    const bus = await needBus(name, config, "to pull prompt jobs and publish trajectories");
    const rollout = await startRolloutServer({
      host,
      port,
      security,
      policyAddress: s.policyAddress,
      feedbackAddress: s.feedbackAddress,
      rpcTimeoutMs: s.rpcTimeoutMs,
      concurrency: s.rolloutConcurrency,
      retryMs: s.rolloutRetryMs,
      maxDeliver: s.rolloutMaxDeliver,
      bus,
      log,
    });
    return {
      address: rollout.server.address,
      close: async () => {
        await rollout.close();
        await bus.close();
      },
    };
  }
  requireModel(config);
  const bus = await needBus(name, config, "to queue jobs, consume trajectories and publish weights");
  const optimizer = await startOptimizerServer({
    host,
    port,
    security,
    bus,
    checkpoint: s.checkpoint,
    settings: config.run,
    outDir: config.out,
    stepTimeoutMs: s.stepTimeoutMs,
    backend: s.backend,
    learnerIn: s.learnerIn,
    weightsSigningKey: s.weightsSigningKey,
    weightsRetention: s.weightsRetention,
    mode: "distributed",
    provenance: { bus: s.natsUrl, feedbackAddress: s.feedbackAddress, feedbackInProcess: false },
    log,
  });
  return {
    address: optimizer.server.address,
    close: async () => {
      await optimizer.close();
      await bus.close();
    },
  };
}

/** What `rlaif serve` does (its command line is declared in specs.ts). */
export const serveCommand: CommandRun = {
  async run({ config, flags, positionals }) {
    const name = positionals[0] as string;
    if (!(SERVICE_NAMES as readonly string[]).includes(name)) {
      throw new ConfigError(`unknown service "${name}": choose one of ${SERVICE_NAMES.join(", ")}`);
    }
    const rawPort = flags.port;
    if (rawPort === undefined) throw new ConfigError("--port is required (0 picks a free port)");
    const port = Number(rawPort);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ConfigError(`--port must be a whole number in 0..65535, got "${String(rawPort)}"`);
    }
    const host = typeof flags.host === "string" ? flags.host : "127.0.0.1";
    // Before any model loads: a taken port or an unreadable certificate is a one-line fix, not a
    // minute of loading.
    const security = grpcSecurity(config.services, resolveControlToken(config.services));
    await checkPortFree(port, host);
    let served: Served;
    try {
      served = await startService(name, config, host, port, security);
    } catch (err) {
      // Taken between the check and the bind (another process was quicker).
      if (/EADDRINUSE/.test(String((err as Error).message))) throw portInUse(port, err);
      throw err;
    }
    process.stdout.write(`${name} listening on ${served.address}\n`);
    await Promise.race([once(process, "SIGTERM"), once(process, "SIGINT")]);
    log(`${name}: shutting down`);
    await served.close();
  },
};
