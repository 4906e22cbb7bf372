/**
 * The operations HTTP server of a service: `/metrics` for Prometheus and `/healthz`, on a port of
 * its own next to gRPC. Why a route table rather than a metrics-only server: other operational
 * pages (the Optimizer's live run report) mount on the same port by adding a route, so a pod
 * exposes one HTTP port for everything that is not the API. See docs/metrics.md.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
} from "prom-client";
import { METRICS_REGISTRY } from "./metrics.js";

/** A route's handler: plain node:http, so any page or exporter can be mounted. */
export type OpsRoute = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** Options of {@link startOpsHttp}. */
export interface OpsHttpOptions {
  /** Interface to listen on; default 127.0.0.1. */
  host?: string;
  /** Port; 0 picks a free one. */
  port: number;
  /** Path (without query) → handler; GET and HEAD only. */
  routes: Readonly<Record<string, OpsRoute>>;
  log?: (line: string) => void;
}

/** A listening ops server. */
export interface OpsHttpServer {
  /** host:port it listens on. */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

function answer(res: ServerResponse, code: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(code, { "content-type": "text/plain; charset=utf-8", ...headers });
  res.end(body);
}

/** Start the ops server with `routes`; rejects if the port cannot be bound. */
export async function startOpsHttp(opts: OpsHttpOptions): Promise<OpsHttpServer> {
  const host = opts.host ?? "127.0.0.1";
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://ops").pathname;
    const route = opts.routes[path];
    if (!route) {
      answer(res, 404, `no page ${path}: this server has ${Object.keys(opts.routes).join(", ")}\n`);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      answer(res, 405, `${path} answers GET only\n`, { allow: "GET, HEAD" });
      return;
    }
    Promise.resolve()
      .then(() => route(req, res))
      .catch((err: unknown) => {
        opts.log?.(`ops http: ${path} failed: ${err instanceof Error ? err.message : String(err)}`);
        if (!res.headersSent) answer(res, 500, "internal error\n");
        else res.destroy();
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    address: `${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A registry's metrics as prom-client JSON (`Registry.getMetricsAsJSON`): what another thread of
 * the process (the embedded run's Policy thread, with registries of its own) hands over.
 */
export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[];

/**
 * The routes every service mounts: `/metrics` (Prometheus text format of `registry`) and
 * `/healthz` (200 while the process serves; gRPC health stays the readiness signal). `threads`
 * adds other threads' metrics to `/metrics` (each thread has a registry of its own), merged per
 * metric and label set, so one process serves one page with every service it runs.
 */
export function metricsRoutes(
  registry: Registry = METRICS_REGISTRY,
  threads: readonly (() => Promise<MetricsSnapshot>)[] = [],
): Record<string, OpsRoute> {
  return {
    "/metrics": async (_req, res) => {
      const body = threads.length
        ? await AggregatorRegistry.aggregate([
            await registry.getMetricsAsJSON(),
            ...(await Promise.all(threads.map((t) => t()))),
          ]).metrics()
        : await registry.metrics();
      answer(res, 200, body, { "content-type": registry.contentType });
    },
    "/healthz": (_req, res) => answer(res, 200, "ok\n"),
  };
}
