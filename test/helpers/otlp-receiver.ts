/**
 * A real OTLP/HTTP trace receiver for tests: a node:http server on /v1/traces that decodes the
 * OTLP/JSON bodies the exporter sends and keeps every span with its process's `service.name`.
 * Why not an in-memory exporter: the receiver checks what actually goes over the wire, which is
 * what a Jaeger or Tempo would see, also from other processes.
 */
import { createServer } from "node:http";

/** One received span, as OTLP/JSON spells it, plus its process's `service.name`. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: { key: string; value: { stringValue?: string; intValue?: string | number } }[];
  links?: { traceId: string; spanId: string }[];
  service: string;
}

/** A started receiver: its base URL (for `--otlp-endpoint`) and the spans so far. */
export interface OtlpReceiver {
  url: string;
  spans: ReceivedSpan[];
  close(): Promise<void>;
}

interface OtlpBody {
  resourceSpans: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] };
    scopeSpans: { spans: Omit<ReceivedSpan, "service">[] }[];
  }[];
}

/** Listen on a free local port; every POST to /v1/traces is answered 200 and its spans kept. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      if (req.url === "/v1/traces") {
        for (const rs of (JSON.parse(body) as OtlpBody).resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue;
          for (const ss of rs.scopeSpans)
            for (const s of ss.spans) spans.push({ ...s, service: service ?? "" });
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    spans,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** A span's attribute as a string ("" when absent); OTLP/JSON sends ints as strings or numbers. */
export function attributeOf(span: ReceivedSpan, key: string): string {
  const v = span.attributes?.find((a) => a.key === key)?.value;
  return String(v?.stringValue ?? v?.intValue ?? "");
}

/** A span's duration in milliseconds. */
export function durationMs(span: ReceivedSpan): number {
  return Number(BigInt(span.endTimeUnixNano) - BigInt(span.startTimeUnixNano)) / 1e6;
}
