/**
 * The spans of one sample's trace, as small hooks the gRPC adapter, the client, the Rollout and
 * the Optimizer call. The W3C `traceparent` the Rollout already carries (NATS headers, gRPC
 * metadata) is the parent of each span, and each span hands on its own `traceparent`. When
 * tracing is off (telemetry/tracing.ts) the OTel API's tracer is a no-op that keeps the parent's
 * context, so the header passes through unchanged and nothing is recorded.
 */
import {
  type Attributes,
  context,
  isSpanContextValid,
  type Link,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

const propagator = new W3CTraceContextPropagator();

/** Instrumentation scope of every rlaif span. */
const TRACER = "rlaif";

/** Attribute names the spans share (rlaif.* for ours, rpc.* from the semantic conventions). */
export const ATTR = {
  runId: "rlaif.run_id",
  step: "rlaif.step",
  trajectoryId: "rlaif.trajectory_id",
  weightsVersion: "rlaif.weights_version",
  promptIndex: "rlaif.prompt_index",
  rpcMethod: "rpc.method",
  rpcService: "rpc.service",
  rpcSystem: "rpc.system",
  rpcCode: "rpc.grpc.status_code",
} as const;

/** The context a `traceparent` header names (the root context when absent or malformed). */
function contextOf(traceparent: string | undefined) {
  if (!traceparent) return ROOT_CONTEXT;
  return propagator.extract(
    ROOT_CONTEXT,
    { traceparent },
    {
      get: (c: Record<string, string>, k: string) => c[k],
      keys: (c: Record<string, string>) => Object.keys(c),
    },
  );
}

/** The `traceparent` of a span, to carry to its children in another process. */
export function traceparentOf(span: Span): string {
  const carrier: Record<string, string> = {};
  propagator.inject(trace.setSpan(context.active(), span), carrier, {
    set: (c, k, v) => {
      c[k] = v;
    },
  });
  return carrier.traceparent ?? "";
}

/** What a new span is. */
export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  /** Contexts this span consumed but is not a child of (an Optimizer step's trajectories). */
  links?: readonly string[];
}

/** A span named `name`, child of `traceparent` (a new trace's root when there is none). */
export function startSpan(name: string, traceparent: string | undefined, opts: SpanOptions = {}): Span {
  const links: Link[] = [];
  for (const tp of opts.links ?? []) {
    const sc = trace.getSpanContext(contextOf(tp));
    if (sc) links.push({ context: sc });
  }
  return trace.getTracer(TRACER).startSpan(
    name,
    {
      kind: opts.kind ?? SpanKind.INTERNAL,
      ...(opts.attributes ? { attributes: opts.attributes } : {}),
      links,
    },
    contextOf(traceparent),
  );
}

/**
 * Run `body` with `span` as the active span, so what it does (the log lines it writes, see
 * {@link activeSpanIds}) belongs to that span; the span itself is ended by the caller. Why a
 * context and not only the `traceparent` argument: the log lines sit far from the span's code.
 * While tracing is off the no-op context manager makes this a plain call.
 */
export function inSpan<T>(span: Span, body: () => T): T {
  return context.with(trace.setSpan(context.active(), span), body);
}

/**
 * The trace and span id (lower-case hex) of the active span, for the log lines written inside it
 * (log-format.ts); `undefined` outside a span, and always while tracing is off (no context
 * manager then), so a log line never names a trace that no backend received.
 */
export function activeSpanIds(): { traceId: string; spanId: string } | undefined {
  const sc = trace.getActiveSpan()?.spanContext();
  if (!sc || !isSpanContextValid(sc)) return undefined;
  return { traceId: sc.traceId, spanId: sc.spanId };
}

/**
 * Run `body` as if inside the span with these ids, which another thread reported (a worker
 * thread's log line, see cluster/policy-thread.ts), so this thread's logger names that span;
 * a plain call when either id is missing or tracing is off here.
 */
export function inSpanOf<T>(ids: { traceId?: string; spanId?: string }, body: () => T): T {
  if (!ids.traceId || !ids.spanId) return body();
  const sc = { traceId: ids.traceId, spanId: ids.spanId, traceFlags: TraceFlags.SAMPLED };
  return context.with(trace.setSpanContext(context.active(), sc), body);
}

/** End `span`, marked as an error with `err`'s message when given. */
export function endSpan(span: Span, err?: unknown): void {
  if (err !== undefined) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
  }
  span.end();
}

/** `/pkg.Service/Method` as the rpc.* attributes. */
function rpcAttributes(path: string): Attributes {
  const [, service = "", method = ""] = path.split("/");
  return { [ATTR.rpcSystem]: "grpc", [ATTR.rpcService]: service, [ATTR.rpcMethod]: method };
}

/** The span name of an RPC, e.g. `rlaif.policy.v1.PolicyService/Generate`. */
const rpcName = (path: string) => path.replace(/^\//, "");

/**
 * The client span of a call that belongs to a trace (its metadata has a `traceparent`), with
 * the metadata to send (carrying the client span as parent); calls outside a trace (control
 * RPCs, health checks) get none, so they do not make a trace each.
 */
export function clientSpan(
  path: string,
  metadata: Readonly<Record<string, string>> | undefined,
): { metadata: Readonly<Record<string, string>> | undefined; end: (code: number, err?: unknown) => void } {
  const parent = metadata?.traceparent;
  if (!parent) return { metadata, end: () => {} };
  const span = startSpan(rpcName(path), parent, { kind: SpanKind.CLIENT, attributes: rpcAttributes(path) });
  return {
    metadata: { ...metadata, traceparent: traceparentOf(span) || parent },
    end: (code, err) => {
      span.setAttribute(ATTR.rpcCode, code);
      endSpan(span, err);
    },
  };
}

/** What the gRPC adapter does with a call's server span: end it OK, or with the failed status. */
export interface ServerSpan {
  /** Run the call's handler inside the span (see {@link inSpan}). */
  run<T>(body: () => T): T;
  ok(): void;
  /** End with the status the call answers, and return that status (to answer with). */
  failed<T extends { code: number; details: string }>(status: T): T;
}

const NO_SERVER_SPAN: ServerSpan = { run: (body) => body(), ok: () => {}, failed: (s) => s };

/** The server span of an incoming call that carries a `traceparent`: a child of it. */
export function serverSpan(path: string, metadata: Readonly<Record<string, string>>): ServerSpan {
  if (!metadata.traceparent) return NO_SERVER_SPAN;
  const span = startSpan(rpcName(path), metadata.traceparent, {
    kind: SpanKind.SERVER,
    attributes: rpcAttributes(path),
  });
  return {
    run: (body) => inSpan(span, body),
    ok: () => {
      span.setAttribute(ATTR.rpcCode, 0);
      endSpan(span);
    },
    failed: (status) => {
      span.setAttribute(ATTR.rpcCode, status.code);
      endSpan(span, status.details || `status ${status.code}`);
      return status;
    },
  };
}

/** Re-exported so that services name span kinds without importing OTel themselves. */
export { SpanKind };
