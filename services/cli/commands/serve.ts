/**
 * `rlaif serve <service>`: one service as its own process, as in a Kubernetes pod. Prints
 * "<service> listening on <address>" on stdout once it serves, and drains on SIGTERM/SIGINT
 * within {@link DRAIN_MS} (stops accepting, in-flight calls finish, the worker stops after its
 * job, a run in progress stops at its step boundary and stays resumable, NATS closes) and exits
 * 0. A port in use is refused before any model loads. It listens on 127.0.0.1 unless `--host`
 * says otherwise (a pod passes `--host 0.0.0.0`), with the TLS, control token and NATS user the
 * settings give.
 */
import { once } from "node:events";
import type { Bus } from "../../core/src/bus/bus.js";
import type { RlaifConfig } from "../../core/src/config/settings.js";
import { ConfigError, RlaifError } from "../../core/src/errors.js";
import { resolveControlToken } from "../../core/src/grpc/control-token.js";
import { type GrpcSecurity, grpcSecurity } from "../../core/src/grpc/credentials.js";
import { metricsRoutes, type OpsRoute, startOpsHttp } from "../../core/src/ops/ops-http.js";
import { bootstrapPhaseLine, type StartPhase, startPhaseLine } from "../../core/src/ops/start-phases.js";
import { lineLogger } from "../../core/src/telemetry/log-format.js";
import type { CommandRun, ParsedCommand } from "../args.js";
import { checkPortFree, portInUse } from "../preflight.js";
import { SERVICE_NAMES } from "../specs.js";
import { requireModel } from "./shared-flags.js";

/** This process's log: stderr, as plain lines until `run` applies `--log-format`. */
let log: (line: string) => void = lineLogger({
  format: "text",
  service: "rlaif",
  write: (t) => process.stderr.write(t),
});

/** A started service: where it listens and how to stop it. */
interface Served {
  address: string;
  close(): Promise<void>;
  /** Pages of this service on the ops HTTP port besides /metrics and /healthz (the Optimizer's live report). */
  routes?: Readonly<Record<string, OpsRoute>>;
}

/*
 * Each service's modules (and the NATS client, and the OTLP exporter) are imported when that
 * service starts, not with this command: a Feedback or Rollout replica then never loads tfjs, and
 * every replica's cold start skips the code of the three services it is not (docs/cold-start.md).
 */

/** This service's connection to NATS, as its own user when the settings name one. */
async function openBus(name: string, config: RlaifConfig): Promise<Bus> {
  const s = config.services;
  const { NatsBus } = await import("../../core/src/bus/nats-bus.js");
  const { natsClientAuth } = await import("../../core/src/bus/nats-auth.js");
  return NatsBus.connect(s.natsUrl, { name: `rlaif-${name}`, auth: natsClientAuth(s) });
}

function needBus(name: string, config: RlaifConfig, why: string): Promise<Bus> {
  if (!config.services.natsUrl) throw new ConfigError(`serve ${name} needs --nats <url> ${why}`);
  return openBus(name, config);
}

/** Start service `name` on host:port with the configured settings and security (and its own flags). */
async function startService(
  name: string,
  config: RlaifConfig,
  host: string,
  port: number,
  security: GrpcSecurity,
  flags: ParsedCommand["flags"],
): Promise<Served> {
  const s = config.services;
  const phase = (p: StartPhase) => log(startPhaseLine(name, p));
  if (name === "feedback") {
    const { scorerFromSettings, startFeedbackServer } = await import("../../feedback/main.js");
    phase("modules");
    const scorer = await scorerFromSettings(s);
    phase("model");
    const server = await startFeedbackServer({ host, port, scorer, security, log });
    return { address: server.address, close: () => server.shutdown(5000) };
  }
  if (name === "policy") {
    requireModel(config);
    const { startPolicyServer } = await import("../../policy/main.js");
    const { resolveOpenAiToken } = await import("../../policy/openai-http.js");
    phase("modules");
    // --openai-port 0 (the default) is off; a token file that cannot be read fails before loading
    const openaiToken = s.openaiPort ? resolveOpenAiToken(s) : undefined;
    if (s.openaiPort) await checkPortFree(s.openaiPort, host, "openai-port");
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
      onPhase: phase,
      ...(bus ? { bus } : {}),
      ...(s.openaiPort
        ? {
            openai: {
              port: s.openaiPort,
              model: s.openaiModel,
              ...(openaiToken ? { token: openaiToken } : {}),
            },
          }
        : {}),
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
    const { startRolloutServer } = await import("../../rollout/main.js");
    phase("modules");
    const rollout = await startRolloutServer({
      host,
      port,
      security,
      policyAddress: s.policyAddress,
      feedbackAddress: s.feedbackAddress,
      rpcTimeoutMs: s.rpcTimeoutMs,
      feedbackTimeoutMs: s.feedbackTimeoutMs,
      concurrency: s.rolloutConcurrency,
      retryMs: s.rolloutRetryMs,
      maxDeliver: s.rolloutMaxDeliver,
      scorer: s,
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
  const { startOptimizerServer } = await import("../../optimizer/main.js");
  const { reportRoutes } = await import("../../optimizer/report-live.js");
  phase("modules");
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
    weightsFullEvery: s.weightsFullEvery,
    mode: "distributed",
    provenance: { bus: s.natsUrl, feedbackAddress: s.feedbackAddress, feedbackInProcess: false },
    resumeUnfinished: flags["resume-unfinished"] === true,
    log,
  });
  return {
    address: optimizer.server.address,
    close: async () => {
      await optimizer.close();
      await bus.close();
    },
    routes: reportRoutes({ runDir: () => optimizer.runs.latestDir() }),
  };
}

/**
 * With `--metrics-port` set, serve the ops HTTP routes (/metrics, /healthz, and the service's own
 * pages: the Optimizer's live run report at /report) next to the started service, on the same host, closed after it drains.
 */
async function withOps(name: string, served: Served, host: string, port: number): Promise<Served> {
  if (!port) return served;
  const ops = await startOpsHttp({ host, port, routes: { ...metricsRoutes(), ...served.routes }, log }).catch(
    async (err: unknown) => {
      await served.close();
      throw /EADDRINUSE/.test(String((err as Error).message)) ? portInUse(port, err, "metrics-port") : err;
    },
  );
  log(`${name}: metrics on http://${ops.address}/metrics`);
  return {
    address: served.address,
    close: async () => {
      await served.close();
      await ops.close();
    },
  };
}

/**
 * Whether tracing may be on (an OTLP endpoint in the settings or the OpenTelemetry environment):
 * only then is tracing.ts, with the OTLP exporter, loaded; it decides whether it really is.
 */
function mayTrace(s: RlaifConfig["services"]): boolean {
  const env = process.env;
  return Boolean(s.otlpEndpoint || env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** What `rlaif serve` does (its command line is declared in specs.ts). */
export const serveCommand: CommandRun = {
  async run({ config, flags, positionals }) {
    const name = positionals[0] as string;
    if (!(SERVICE_NAMES as readonly string[]).includes(name)) {
      throw new ConfigError(`unknown service "${name}": choose one of ${SERVICE_NAMES.join(", ")}`);
    }
    const rawPort = flags.port;
    if (rawPort === undefined) throw new ConfigError("--port is required (0 picks a free one)");
    const port = Number(rawPort);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ConfigError(`--port must be a whole number in 0..65535, got "${String(rawPort)}"`);
    }
    const host = typeof flags.host === "string" ? flags.host : "127.0.0.1";
    const format = config.services.logFormat;
    log = lineLogger({ format, service: name, write: (t) => process.stderr.write(t) });
    // The cold start's phases (start-phases.ts), read by bench/cold-start.ts and by whoever
    // wonders why a replica took long to come back.
    log(bootstrapPhaseLine(name));
    // Before any model loads: a taken port or an unreadable certificate is a one-line fix, not a
    // minute of loading.
    const security = grpcSecurity(config.services, resolveControlToken(config.services));
    await checkPortFree(port, host);
    const metricsPort = config.services.metricsPort;
    if (metricsPort) await checkPortFree(metricsPort, host, "metrics-port");
    // From here on a SIGTERM (Kubernetes stopping the pod) or SIGINT drains instead of killing,
    // also one that arrives while the model still loads.
    const stop = Promise.race([once(process, "SIGTERM"), once(process, "SIGINT")]).then(
      ([signal]) => signal as string,
    );
    // Before the service starts, so its first calls are traced; flushed after the drain.
    const tracing = mayTrace(config.services)
      ? (await import("../../core/src/telemetry/tracing.js")).tracingFromSettings(
          config.services,
          `rlaif-${name}`,
        )
      : undefined;
    const starting = startService(name, config, host, port, security, flags)
      .catch((err: unknown) => {
        // Taken between the check and the bind (another process was quicker).
        if (/EADDRINUSE/.test(String((err as Error).message))) throw portInUse(port, err);
        throw err;
      })
      .then((served) => withOps(name, served, host, metricsPort));
    const first = await Promise.race([starting, stop]);
    if (typeof first === "string") {
      log(`${name}: ${first} while starting; stopping once it has started`);
      await drain(name, starting).finally(() => tracing?.shutdown());
      return;
    }
    log(startPhaseLine(name, "serving"));
    process.stdout.write(`${name} listening on ${first.address}\n`);
    log(`${name}: ${await stop}: draining (at most ${DRAIN_MS / 1000} s)`);
    await drain(name, Promise.resolve(first)).finally(() => tracing?.shutdown());
  },
};

/**
 * Longest a drain may take: under the 30-s Kubernetes default grace, so the process exits by
 * itself before it would be killed.
 */
export const DRAIN_MS = 25_000;

/**
 * Close a service (stop accepting, finish or cancel in-flight work, close NATS) within
 * {@link DRAIN_MS}; an RlaifError (exit 1) when it did not finish in time.
 */
async function drain(name: string, served: Promise<Served>): Promise<void> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new RlaifError(`${name} did not drain within ${DRAIN_MS / 1000} s; exiting anyway`)),
      DRAIN_MS,
    );
  });
  try {
    await Promise.race([served.then((s) => s.close()), late]);
  } finally {
    clearTimeout(timer);
  }
  log(`${name}: drained in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
