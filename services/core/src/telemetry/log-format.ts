/**
 * The services' log lines as plain text or as one JSON object per line. Every service already
 * logs through a `log: (line: string) => void` option; this module builds that function, so a
 * `--log-format json` changes what reaches stderr without touching any service. Why JSON lines:
 * a log shipper (Loki, Elasticsearch, CloudWatch) indexes fields such as `level` and `run_id`
 * without a regex per message.
 */
import { activeSpanIds } from "./spans.js";

/** The formats `--log-format` offers. */
export type LogFormat = "text" | "json";

/** How bad a line is; derived from its text, since the services pass plain strings. */
export type LogLevel = "info" | "warn" | "error";

/** Context known where the line is written: the run and the active span, when there are any. */
export interface LogContext {
  runId?: string;
  traceId?: string;
  spanId?: string;
}

/** What {@link lineLogger} needs. */
export interface LineLoggerOptions {
  format: LogFormat;
  /** `service` field of each JSON line, e.g. `optimizer`. */
  service: string;
  /** Where a finished line goes (without its newline added: this appends one). */
  write: (text: string) => void;
  /** Clock, for tests; defaults to `new Date()`. */
  now?: () => Date;
  /**
   * Context of the moment of logging (run id, trace/span id); fields left out stay out. Default:
   * the active span's ids ({@link spanLogContext}).
   */
  context?: () => LogContext;
}

const ERROR = /\b(error|failed|fails|cannot|refused|crashed|exception)\b/i;
const WARN = /\b(warn(ing)?|retry(ing)?|dead[- ]letter(ed)?|timed out|giving up|dropped)\b/i;

/**
 * The level of a plain line: `error` when it reports a failure, `warn` for a retry or a timeout,
 * else `info`. A heuristic on the words, because the services' `log` option carries only text;
 * it errs towards the more severe level so that an alert on `level=error` misses nothing.
 */
export function levelOf(line: string): LogLevel {
  if (ERROR.test(line)) return "error";
  if (WARN.test(line)) return "warn";
  return "info";
}

/**
 * A generated run id in a line (optimizer/run-helpers.ts `newRunId`: `run-<14 digits>-<6>`), for
 * lines logged without a context; its exact shape keeps words such as "run finished" out.
 */
const RUN_IN_LINE = /\b(run-\d{14}-[a-z0-9]{6})\b/;

/**
 * One log line in `format`: the line itself for `text`; for `json` an object with `time` (ISO
 * 8601 UTC), `level`, `service`, `run_id` (from the context or the line, when known),
 * `trace_id`/`span_id` (when inside a span) and `msg`, in that order, without a newline.
 */
export function formatLine(
  format: LogFormat,
  service: string,
  line: string,
  time: Date,
  context: LogContext = {},
): string {
  if (format === "text") return line;
  const runId = context.runId ?? RUN_IN_LINE.exec(line)?.[1];
  return JSON.stringify({
    time: time.toISOString(),
    level: levelOf(line),
    service,
    ...(runId ? { run_id: runId } : {}),
    ...(context.traceId ? { trace_id: context.traceId } : {}),
    ...(context.spanId ? { span_id: context.spanId } : {}),
    msg: line,
  });
}

/**
 * The trace and span id of the span active where the line is logged (a rollout job, an RPC
 * handler, an optimizer step, a weights swap), so a log search jumps to the trace; none outside
 * a span or while tracing is off.
 */
export function spanLogContext(): LogContext {
  const ids = activeSpanIds();
  return ids ? { traceId: ids.traceId, spanId: ids.spanId } : {};
}

/**
 * The `log` function to hand a service: each call writes one formatted line. A multi-line
 * message stays one JSON object (its newlines escaped), so a shipper never splits a record.
 */
export function lineLogger(opts: LineLoggerOptions): (line: string) => void {
  const now = opts.now ?? (() => new Date());
  const context = opts.context ?? spanLogContext;
  return (line) => {
    opts.write(`${formatLine(opts.format, opts.service, line, now(), context())}\n`);
  };
}
