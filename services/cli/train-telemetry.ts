/**
 * The telemetry of `rlaif train`, which runs all four services in one process: the log format
 * (`--log-format`), OTLP tracing (`--otlp-endpoint`, `--otlp-headers`) and the Prometheus port
 * (`--metrics-port`), the same settings `rlaif serve` reads. Why one /metrics for the whole
 * process: the services share the process's registry (core/src/ops/metrics.ts), and the metric
 * names already say which service each belongs to (`rlaif_optimizer_*`, `rlaif_policy_*`, the
 * RPC histogram's `method`); the Policy's worker thread keeps a registry of its own, merged in at
 * scrape time. See docs/metrics.md and docs/observability.md.
 */

import { Writable } from "node:stream";
import type { EmbeddedCluster } from "../cluster/embedded-cluster.js";
import type { RlaifConfig } from "../core/src/config/settings.js";
import { METRICS_REGISTRY } from "../core/src/ops/metrics.js";
import { metricsRoutes, type OpsHttpServer, startOpsHttp } from "../core/src/ops/ops-http.js";
import { lineLogger } from "../core/src/telemetry/log-format.js";
import { type TracingConfig, tracingFromSettings } from "../core/src/telemetry/tracing.js";
import { reportRoutes } from "../optimizer/report-live.js";
import { checkPortFree, portInUse } from "./preflight.js";
import { createProgress, type ProgressReporter, stepLine } from "./progress.js";

/** The embedded run's ops port listens on loopback only: the run is one person's process. */
const METRICS_HOST = "127.0.0.1";

/** `service` of the embedded run's JSON log lines and `service.name` of its spans. */
export const TRAIN_SERVICE = "rlaif-train";

/** What `rlaif train` reports through, set up before its cluster starts. */
export interface TrainTelemetry {
  /** Steps and log lines: the progress bar and plain lines, or one JSON object per line. */
  readonly progress: ProgressReporter;
  /** Where the run's human summary goes: stderr, or (JSON format) a stream writing it as JSON lines. */
  readonly summaryOut: NodeJS.WritableStream;
  /** Tracing for the Policy's worker thread (its own OTel globals); absent when tracing is off. */
  readonly policyTracing?: TracingConfig;
  /** With `--metrics-port`, serve /metrics (every service of the cluster), /healthz and /report. */
  serve(cluster: EmbeddedCluster): Promise<void>;
  /** Stop the ops port (once the cluster is closed). */
  closeOps(): Promise<void>;
  /** Flush and stop tracing: last, after the held-out evaluation. */
  shutdown(): Promise<void>;
}

/**
 * Progress as JSON log lines: each step's plain line and each log line becomes one object
 * (telemetry/log-format.ts), with no bar, so a shipper parses every line of stderr.
 */
function jsonProgress(log: (line: string) => void): ProgressReporter {
  let total = 0;
  return {
    begin: (steps) => {
      total = steps;
    },
    step: (m) => log(stepLine(m, total)),
    log,
    done: () => {},
  };
}

/** A stream whose text goes to `log` line by line (the run summary as JSON log lines). */
function linesTo(log: (line: string) => void): Writable {
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      for (const line of String(chunk).trimEnd().split("\n")) log(line);
      done();
    },
  });
}

/** Check the metrics port, start tracing and pick the progress format, from the settings. */
export async function startTrainTelemetry(config: RlaifConfig): Promise<TrainTelemetry> {
  const s = config.services;
  // Before any model loads: a taken port is a one-line fix, not a minute of loading.
  await checkPortFree(s.metricsPort, METRICS_HOST, "metrics-port");
  const json = s.logFormat === "json";
  const progress = json
    ? jsonProgress(
        lineLogger({ format: "json", service: TRAIN_SERVICE, write: (t) => process.stderr.write(t) }),
      )
    : createProgress();
  const tracing = tracingFromSettings(s, TRAIN_SERVICE);
  let ops: OpsHttpServer | undefined;
  return {
    progress,
    summaryOut: json ? linesTo(progress.log) : process.stderr,
    ...(tracing ? { policyTracing: { ...tracing.config, serviceName: `${TRAIN_SERVICE}-policy` } } : {}),
    async serve(cluster) {
      if (!s.metricsPort) return;
      const thread = cluster.policyThread;
      const routes = {
        ...metricsRoutes(METRICS_REGISTRY, thread ? [() => thread.metrics()] : []),
        ...reportRoutes({ runDir: () => cluster.optimizer.runs.latestDir() }),
      };
      ops = await startOpsHttp({ host: METRICS_HOST, port: s.metricsPort, routes, log: progress.log }).catch(
        (err: unknown) => {
          throw /EADDRINUSE/.test(String((err as Error).message))
            ? portInUse(s.metricsPort, err, "metrics-port")
            : err;
        },
      );
      progress.log(`rlaif train: metrics on http://${ops.address}/metrics`);
    },
    async closeOps() {
      await ops?.close();
      ops = undefined;
    },
    shutdown: async () => {
      await tracing?.shutdown();
    },
  };
}
