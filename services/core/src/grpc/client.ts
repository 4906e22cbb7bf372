/**
 * Typed gRPC clients for protobuf-es services on grpc-js. Every call carries a deadline (the
 * client's default unless overridden), because a call without one can hang a Rollout worker
 * forever on a stuck peer; every failure is an RpcError with the status code, so callers branch
 * on the code rather than on message text:
 *
 *   const policy = createClient(PolicyService, "policy:50051", { defaultTimeoutMs: 10_000 });
 *   const res = await policy.generate({ prompts: ["hi"] }, { timeoutMs: 2000, metadata: { traceparent } });
 *   for await (const tok of policy.generateStream({ prompt: "hi" }, { signal })) ...
 *   policy.close();
 */
import {
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { ConfigError, RpcError, ValidationError } from "../errors.js";
import { clientSpan } from "../telemetry/spans.js";
import { encodeMessage, methodPath } from "./adapter.js";

/** Per-call options. */
export interface CallOptions {
  /** Deadline, in milliseconds from now; default: the client's `defaultTimeoutMs`. */
  timeoutMs?: number;
  /** Cancels the call (it then fails with CANCELLED). */
  signal?: AbortSignal;
  /** Request metadata, e.g. `{ traceparent }`. */
  metadata?: Readonly<Record<string, string>>;
  /** Wait for the channel to connect (within the deadline) instead of failing fast with UNAVAILABLE. */
  waitForReady?: boolean;
}

/** Options of `createClient`. */
export interface ClientOptions {
  /** Deadline of calls that do not set `timeoutMs`; streaming calls included (override those). */
  defaultTimeoutMs: number;
  /** Default: insecure (plaintext); `grpc.credentials.createSsl(...)` for TLS/mTLS. */
  credentials?: grpc.ChannelCredentials;
  /** grpc-js channel options (keepalive, message-size limits). */
  channelOptions?: grpc.ChannelOptions;
}

/** A unary method on the client. */
export type UnaryCall<I extends DescMessage, O extends DescMessage> = (
  req: MessageInitShape<I>,
  opts?: CallOptions,
) => Promise<MessageShape<O>>;
/** A server-streaming method on the client; the call starts at the first iteration. */
export type ServerStreamingCall<I extends DescMessage, O extends DescMessage> = (
  req: MessageInitShape<I>,
  opts?: CallOptions,
) => AsyncIterable<MessageShape<O>>;
/** The client method type of one method descriptor. */
export type ClientMethod<M> = M extends {
  methodKind: "unary";
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? UnaryCall<I, O>
  : M extends {
        methodKind: "server_streaming";
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? ServerStreamingCall<I, O>
    : never;
/** A typed client: one method per rpc (by localName, e.g. `generate`), plus `close()`. */
export type Client<S extends DescService> = { [K in keyof S["method"]]: ClientMethod<S["method"][K]> } & {
  /** Close the channel; calls in flight fail with CANCELLED or UNAVAILABLE. */
  close(): void;
};

/**
 * Status codes worth retrying with back-off: the peer is down or overloaded, or too slow this
 * time. Never INVALID_ARGUMENT, NOT_FOUND or FAILED_PRECONDITION: the same call fails again.
 */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof RpcError)) return false;
  const { UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED } = grpc.status;
  return [UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED].includes(err.code);
}

/** A grpc-js failure as an RpcError that names the method. */
function toRpcError(err: unknown, path: string): RpcError {
  if (err instanceof RpcError) return err;
  const e = err as Partial<grpc.ServiceError> | undefined;
  if (typeof e?.code === "number") {
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(e.metadata?.getMap() ?? {}))
      if (typeof v === "string") metadata[k] = v;
    return new RpcError(e.code, e.details ?? e.message ?? "", { cause: err, metadata, method: path });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new RpcError(grpc.status.UNKNOWN, message, { cause: err, method: path });
}

function deadlineOf(timeoutMs: number): Date {
  if (!(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    throw new ValidationError(
      "timeoutMs",
      `must be a positive finite number of milliseconds, got ${timeoutMs}`,
    );
  }
  return new Date(Date.now() + timeoutMs);
}

function metadataOf(opts: CallOptions): grpc.Metadata {
  const md = new grpc.Metadata(opts.waitForReady ? { waitForReady: true } : undefined);
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  return md;
}

function unaryCall(client: grpc.Client, method: DescMethod, defaultTimeoutMs: number) {
  const path = methodPath(method);
  return (req: MessageInitShape<DescMessage>, opts: CallOptions = {}) =>
    new Promise<MessageShape<DescMessage>>((resolve, reject) => {
      const { signal } = opts;
      if (signal?.aborted)
        throw new RpcError(grpc.status.CANCELLED, "cancelled before start", { method: path });
      const span = clientSpan(path, opts.metadata);
      const call = client.makeUnaryRequest(
        path,
        (m: MessageInitShape<DescMessage>) => encodeMessage(method.input, m),
        (b: Buffer) => fromBinary(method.output, b),
        req,
        metadataOf({ ...opts, ...(span.metadata ? { metadata: span.metadata } : {}) }),
        { deadline: deadlineOf(opts.timeoutMs ?? defaultTimeoutMs) },
        (err, res) => {
          signal?.removeEventListener("abort", onAbort);
          span.end(err?.code ?? 0, err ?? undefined);
          if (err || !res) reject(toRpcError(err, path));
          else resolve(res);
        },
      );
      const onAbort = () => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
}

function serverStreamingCall(client: grpc.Client, method: DescMethod, defaultTimeoutMs: number) {
  const path = methodPath(method);
  return async function* (req: MessageInitShape<DescMessage>, opts: CallOptions = {}) {
    const { signal } = opts;
    if (signal?.aborted)
      throw new RpcError(grpc.status.CANCELLED, "cancelled before start", { method: path });
    const call = client.makeServerStreamRequest(
      path,
      (m: MessageInitShape<DescMessage>) => encodeMessage(method.input, m),
      (b: Buffer) => fromBinary(method.output, b),
      req,
      metadataOf(opts),
      { deadline: deadlineOf(opts.timeoutMs ?? defaultTimeoutMs) },
    );
    const onAbort = () => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const msg of call) yield msg as MessageShape<DescMessage>;
    } catch (err) {
      throw toRpcError(err, path);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      // Stops the server's stream when the consumer breaks out early; a no-op after the end.
      call.cancel();
    }
  };
}

/**
 * A typed client for a generated service. One channel per client: share it between callers and
 * `close()` it when done.
 */
export function createClient<S extends DescService>(
  service: S,
  address: string,
  options: ClientOptions,
): Client<S> {
  deadlineOf(options.defaultTimeoutMs);
  const client = new grpc.Client(
    address,
    options.credentials ?? grpc.credentials.createInsecure(),
    options.channelOptions,
  );
  const methods: Record<string, unknown> = { close: () => client.close() };
  for (const method of service.methods) {
    if (method.localName in methods)
      throw new ConfigError(`${service.typeName}: method name "close" is reserved`);
    if (method.methodKind === "unary") {
      methods[method.localName] = unaryCall(client, method, options.defaultTimeoutMs);
    } else if (method.methodKind === "server_streaming") {
      methods[method.localName] = serverStreamingCall(client, method, options.defaultTimeoutMs);
    }
  }
  return methods as Client<S>;
}

/** What grpc.health.v1.Health/Check answers. */
export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

/**
 * Ask a server's grpc.health.v1 service whether it (service "") or one of its services serves:
 * what readiness scripts, `rlaif` start-up ordering and tests need. Throws RpcError when the
 * server cannot be reached in time, or NOT_FOUND for a service it does not know.
 */
export async function checkHealth(
  address: string,
  service = "",
  timeoutMs = 2000,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
): Promise<ServingStatus> {
  const client = new grpc.Client(address, credentials);
  const { path, requestSerialize, responseDeserialize } = healthService.Check;
  try {
    return await new Promise<ServingStatus>((resolve, reject) => {
      client.makeUnaryRequest(
        path,
        requestSerialize,
        responseDeserialize,
        { service },
        new grpc.Metadata(),
        { deadline: deadlineOf(timeoutMs) },
        (err, res: { status?: ServingStatus } | undefined) =>
          err ? reject(toRpcError(err, path)) : resolve(res?.status ?? "UNKNOWN"),
      );
    });
  } finally {
    client.close();
  }
}
