/**
 * OpenTelemetry tracing of the services: off by default, on when an OTLP/HTTP endpoint is set
 * (`--otlp-endpoint` or OTEL_EXPORTER_OTLP_ENDPOINT). A process starts it once with its
 * `service.name`; the span helpers (spans.ts) then record into it. Why a global provider and
 * not one passed around: the hooks sit deep in the gRPC adapter, the client and the workers,
 * and the OTel API's no-op default keeps every hook free when tracing is off.
 */
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { ConfigError } from "../errors.js";
import { RLAIF_VERSION } from "../version.js";

/** Where spans go and what they are called, once tracing is on. */
export interface TracingConfig {
  /** Full OTLP/HTTP traces URL (ends in `/v1/traces`). */
  url: string;
  headers: Record<string, string>;
  /** `service.name` of this process's spans, e.g. `rlaif-policy`. */
  serviceName: string;
}

/** The settings tracing reads (services block of the config). */
export interface TracingSettings {
  otlpEndpoint: string;
  otlpHeaders: string;
}

/** `k=v,k2=v2` as a record; values may hold `=`; a pair without `=` is a ConfigError. */
export function parseOtlpHeaders(text: string, source = "--otlp-headers"): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of text.split(",")) {
    if (!pair.trim()) continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new ConfigError(`${source}: "${pair}" is not k=v (pairs are separated by commas)`);
    headers[pair.slice(0, eq).trim()] = decodeURIComponent(pair.slice(eq + 1).trim());
  }
  return headers;
}

/** The OTLP traces URL of a base endpoint, as the OTLP spec builds it: `<base>/v1/traces`. */
function tracesUrl(base: string): string {
  const trimmed = base.replace(/\/+$/, "");
  return trimmed.endsWith("/v1/traces") ? trimmed : `${trimmed}/v1/traces`;
}

/**
 * The tracing of a process, or `undefined` (off) when neither the settings nor the standard
 * environment variables name an endpoint. Settings win over the environment.
 */
export function tracingConfig(
  settings: TracingSettings,
  serviceName: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): TracingConfig | undefined {
  const signalUrl = settings.otlpEndpoint ? undefined : env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const base = settings.otlpEndpoint || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const url = signalUrl || (base ? tracesUrl(base) : "");
  if (!url) return undefined;
  if (!/^https?:\/\//.test(url)) {
    throw new ConfigError(`OTLP endpoint "${url}" must be an http:// or https:// URL`);
  }
  const headers = settings.otlpHeaders
    ? parseOtlpHeaders(settings.otlpHeaders)
    : parseOtlpHeaders(env.OTEL_EXPORTER_OTLP_HEADERS ?? "", "OTEL_EXPORTER_OTLP_HEADERS");
  return { url, headers, serviceName };
}

/** A started tracing: {@link Tracing.shutdown} flushes the spans not yet sent. */
export interface Tracing {
  readonly config: TracingConfig;
  /** Send what is buffered now (a test, or before a step's result is reported). */
  flush(): Promise<void>;
  /** Flush and stop; the process's spans are no-ops afterwards. */
  shutdown(): Promise<void>;
}

/**
 * Start exporting this process's spans to `config.url`, batched (a span never waits on the
 * network). `exporter` replaces the OTLP one (tests of other exporters only).
 */
export function startTracing(config: TracingConfig, exporter?: SpanExporter): Tracing {
  const processor: SpanProcessor = new BatchSpanProcessor(
    exporter ?? new OTLPTraceExporter({ url: config.url, headers: config.headers }),
    { scheduledDelayMillis: 500 },
  );
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: config.serviceName,
      [ATTR_SERVICE_VERSION]: RLAIF_VERSION,
    }),
    spanProcessors: [processor],
  });
  trace.setGlobalTracerProvider(provider);
  // The active span follows the async work it started (AsyncLocalStorage), so a span helper's
  // body and the log lines it writes see that span (spans.ts inSpan, log-format.ts). Only while
  // tracing is on: off, the API's no-op context manager keeps every context the root one.
  const contexts = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contexts);
  return {
    config,
    flush: () => provider.forceFlush(),
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
      context.disable();
      contexts.disable();
    },
  };
}

/** Start tracing when the settings (or environment) name an endpoint; `undefined` when off. */
export function tracingFromSettings(settings: TracingSettings, serviceName: string): Tracing | undefined {
  const config = tracingConfig(settings, serviceName);
  return config ? startTracing(config) : undefined;
}
