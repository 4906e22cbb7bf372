/**
 * The run report served live over HTTP (docs/run-report.md): the same page `rlaif report`
 * writes, made afresh from the run directory on every request and reloading itself every few
 * seconds while the run is running. Why a route table and not a server: the Optimizer's ops
 * HTTP server (its metrics port) mounts these routes beside its others, and a test mounts them
 * on a plain node:http server.
 */
import type { ServerResponse } from "node:http";
import { ConfigError } from "../core/src/errors.js";
import type { OpsRoute } from "../core/src/ops/ops-http.js";
import { renderReportHtml } from "./report-html.js";
import { loadRunReport } from "./run-report.js";

/** A request handler of node:http (the ops server's route type). */
export type RouteHandler = OpsRoute;

/** Where the routes find the run to show. */
export interface ReportRouteOptions {
  /**
   * The directory of the run to show (the Optimizer's latest run), or null before any run.
   * Called per request, so a new run shows up without remounting.
   */
  runDir: () => string | null;
  /** Reload interval of a page whose run has not ended, seconds (default 10; 0 never). */
  refreshSeconds?: number;
}

/** The path the page is served on. */
export const REPORT_PATH = "/report";

function send(res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, {
    "content-type": `${type}; charset=utf-8`,
    "cache-control": "no-store",
    // The page is self-contained: nothing may be fetched, whatever a completion holds.
    "content-security-policy":
      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:",
  });
  res.end(body);
}

/**
 * `{ "/report": handler }`: GET (or HEAD) answers the current run's page (200), 404 when there is
 * no run yet, 405 for other methods, 500 with the reason when the run directory cannot be read.
 */
export function reportRoutes(opts: ReportRouteOptions): Record<string, RouteHandler> {
  const refresh = opts.refreshSeconds ?? 10;
  const handler: RouteHandler = (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      send(res, 405, "text/plain", "the run report answers GET only\n");
      return;
    }
    const dir = opts.runDir();
    if (!dir) {
      send(res, 404, "text/plain", "no run has started on this Optimizer yet\n");
      return;
    }
    try {
      const data = loadRunReport(dir);
      const html = renderReportHtml(data, data.ended ? {} : { refreshSeconds: refresh });
      send(res, 200, "text/html", req.method === "HEAD" ? "" : html);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      send(res, 500, "text/plain", `${err.message}\n`);
    }
  };
  return { [REPORT_PATH]: handler };
}
