/**
 * Serves protobuf-es services on grpc-js. grpc-js knows nothing of protobuf-es, so this module
 * builds its service definition from the generated `DescService` and wraps typed handlers:
 *
 *   registerService(server, PolicyService, {
 *     async generate(req, ctx) { ... return { completions, weightsVersion }; },
 *     async *generateStream(req, ctx) { for (...) yield { index, token }; },
 *     ...
 *   });
 *
 * Requests are decoded inside the handler (grpc-js would answer undecodable bytes with INTERNAL;
 * we answer INVALID_ARGUMENT) and checked against the API's rules before the handler runs. Every
 * failure goes through `toStatus`, so no handler error can crash the process.
 */
import { once } from "node:events";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { RpcError } from "../errors.js";
import { timedUnary, timeStream } from "../ops/rpc-metrics.js";
import { serverSpan } from "../telemetry/spans.js";
import { REQUEST_RULES } from "./rules.js";
import { toStatus } from "./status.js";
import { type RuleSet, validate } from "./validation.js";

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** Full method path, e.g. "/rlaif.policy.v1.PolicyService/Generate" (for logs). */
  readonly method: string;
  /** When the caller stops waiting; undefined if it set no deadline. */
  readonly deadline: Date | undefined;
  /** Fires when the deadline passes or the client cancels: pass it to anything slow. */
  readonly signal: AbortSignal;
  /** Request metadata (ASCII headers only, first value per key), e.g. `traceparent`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Milliseconds until the deadline (Infinity without one): budget for downstream calls. */
  timeRemainingMs(): number;
}

type MaybePromise<T> = T | Promise<T>;
/** A unary handler: one request, one response. */
export type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  req: MessageShape<I>,
  ctx: CallContext,
) => MaybePromise<MessageInitShape<O>>;
/** A server-streaming handler: yields responses; stop when `ctx.signal` fires. */
export type ServerStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  req: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;
/** The handler type of one method descriptor (client and bidi streaming are not used by the API). */
export type MethodImpl<M> = M extends {
  methodKind: "unary";
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? UnaryImpl<I, O>
  : M extends {
        methodKind: "server_streaming";
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? ServerStreamingImpl<I, O>
    : never;
/** A typed implementation of a generated service: one handler per method, keyed by its localName. */
export type ServiceImpl<S extends DescService> = { [K in keyof S["method"]]: MethodImpl<S["method"][K]> };

/** Options of `registerService`. */
export interface RegisterOptions {
  /** Request rules, matched to methods by input type; defaults to the whole API's `REQUEST_RULES`. */
  rules?: readonly RuleSet[];
  /** Where unexpected (INTERNAL) failures are reported; defaults to stderr. */
  log?: (line: string) => void;
}

/** The grpc-js path of a method: "/<package>.<Service>/<Method>". */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Bytes of a message as the Buffer grpc-js wants, without copying. */
export function encodeMessage<Desc extends DescMessage>(desc: Desc, init: MessageInitShape<Desc>): Buffer {
  const bytes = toBinary(desc, create(desc, init));
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const identity = (b: Buffer): Buffer => b;
const MAX_TIMER_MS = 2 ** 31 - 1;
const DEADLINE_SLACK_MS = 100;

/** Per-call state: the context handed to the handler, plus what the error mapping needs. */
function openContext(call: grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer>) {
  const raw = call.getDeadline();
  const deadlineMs = raw instanceof Date ? raw.getTime() : raw;
  const hasDeadline = Number.isFinite(deadlineMs);
  const controller = new AbortController();
  let deadlineExceeded = false;
  let cancelled = false;
  // Node timers overflow past 2^31-1 ms (~24.8 days); a deadline that far away never fires here.
  const timer =
    hasDeadline && deadlineMs - Date.now() <= MAX_TIMER_MS
      ? setTimeout(
          () => {
            deadlineExceeded = true;
            controller.abort(new DOMException("deadline exceeded", "TimeoutError"));
          },
          Math.max(0, deadlineMs - Date.now()),
        )
      : undefined;
  const onCancel = () => {
    // A client gives up at its own deadline and resets the stream, which lands here a little
    // before our copy of the deadline (computed on arrival) passes: call that a deadline too.
    if (hasDeadline && Date.now() >= deadlineMs - DEADLINE_SLACK_MS) deadlineExceeded = true;
    else cancelled = true;
    controller.abort(
      deadlineExceeded
        ? new DOMException("deadline exceeded", "TimeoutError")
        : new DOMException("cancelled by the client", "AbortError"),
    );
  };
  call.on("cancelled", onCancel);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(call.metadata.getMap())) {
    if (typeof value === "string") metadata[key] = value;
  }
  const context: CallContext = {
    method: call.getPath(),
    deadline: hasDeadline ? new Date(deadlineMs) : undefined,
    signal: controller.signal,
    metadata,
    timeRemainingMs: () => (hasDeadline ? Math.max(0, deadlineMs - Date.now()) : Number.POSITIVE_INFINITY),
  };
  return {
    context,
    state: () => ({
      deadlineExceeded: deadlineExceeded || (hasDeadline && Date.now() >= deadlineMs),
      cancelled,
    }),
    /** Throws if the deadline already passed on arrival: such a call must not act at all. */
    refuseExpired: () => {
      if (hasDeadline && Date.now() >= deadlineMs) {
        deadlineExceeded = true;
        throw new DOMException("deadline exceeded", "TimeoutError");
      }
    },
    close: () => {
      clearTimeout(timer);
      call.removeListener("cancelled", onCancel);
    },
  };
}

function decode(desc: DescMessage, bytes: Buffer, rules: RuleSet | undefined): MessageShape<DescMessage> {
  let message: MessageShape<DescMessage>;
  try {
    message = fromBinary(desc, bytes);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new RpcError(grpc.status.INVALID_ARGUMENT, `request is not a valid ${desc.typeName}: ${why}`, {
      cause,
    });
  }
  if (rules) validate(rules, message);
  return message;
}

type AnyHandler = (req: unknown, ctx: CallContext) => unknown;

/** A grpc-js service definition with its matching untyped implementation. */
export interface GrpcService {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

/**
 * Build the grpc-js definition and implementation from an implementation the caller has already
 * type-checked (see `implement()` in server.ts); `impl` holds one handler per method localName.
 */
export function buildServiceDefinition(
  service: DescService,
  impl: object,
  options: RegisterOptions = {},
): GrpcService {
  const log = options.log ?? ((line: string) => console.error(line));
  const rulesByType = new Map((options.rules ?? REQUEST_RULES).map((r) => [r.schema.typeName, r]));
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  const handlers = impl as unknown as Record<string, AnyHandler | undefined>;

  for (const method of service.methods) {
    const path = methodPath(method);
    if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
      throw new TypeError(`${path}: ${method.methodKind} methods are not supported by the gRPC adapter`);
    }
    definition[method.name] = {
      path,
      requestStream: false,
      responseStream: method.methodKind === "server_streaming",
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
      originalName: method.localName,
    };
    const fn = handlers[method.localName];
    // A missing handler is left to grpc-js, which answers UNIMPLEMENTED.
    if (typeof fn !== "function") continue;
    const rules = rulesByType.get(method.input.typeName);
    // grpc-js should never throw from callback/end/emit; if it does, log rather than crash.
    const lastResort = (err: unknown) => log(`grpc: ${path}: answering failed: ${String(err)}`);
    const fail = (err: unknown, state: { deadlineExceeded: boolean; cancelled: boolean }) => {
      const mapped = toStatus(err, state);
      if (mapped.unexpected) {
        log(`grpc: ${path} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      return { code: mapped.code, details: mapped.details };
    };

    if (method.methodKind === "unary") {
      implementation[method.name] = (
        call: grpc.ServerUnaryCall<Buffer, Buffer>,
        answer: grpc.sendUnaryData<Buffer>,
      ) => {
        const callback = timedUnary(path, answer);
        const ctx = openContext(call);
        const span = serverSpan(path, ctx.context.metadata);
        span
          .run(async () => {
            ctx.refuseExpired();
            const req = decode(method.input, call.request, rules);
            const res = await fn.call(impl, req, ctx.context);
            return encodeMessage(method.output, res as MessageInitShape<DescMessage>);
          })
          .then(
            (bytes) => {
              span.ok();
              callback(null, bytes);
            },
            (err: unknown) => callback(span.failed(fail(err, ctx.state()))),
          )
          .catch(lastResort)
          .finally(ctx.close);
      };
    } else {
      implementation[method.name] = (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        timeStream(path, call);
        const ctx = openContext(call);
        const span = serverSpan(path, ctx.context.metadata);
        const { signal } = ctx.context;
        span
          .run(async () => {
            ctx.refuseExpired();
            const req = decode(method.input, call.request, rules);
            const stream = fn.call(impl, req, ctx.context) as AsyncIterable<MessageInitShape<DescMessage>>;
            for await (const item of stream) {
              if (signal.aborted) break;
              // Respect back-pressure: a slow reader must not make us buffer a whole stream.
              if (!call.write(encodeMessage(method.output, item))) await once(call, "drain", { signal });
            }
            // A stream cut short by the deadline or the client did not complete: never answer OK,
            // or a caller racing its own deadline timer would read a truncated stream as whole.
            if (signal.aborted) throw signal.reason;
          })
          .then(
            () => {
              span.ok();
              call.end();
            },
            (err: unknown) => call.emit("error", span.failed(fail(err, ctx.state()))),
          )
          .catch(lastResort)
          .finally(ctx.close);
      };
    }
  }
  return { definition, implementation };
}

/**
 * Register a typed implementation of a generated service on a grpc-js server. Incoming requests
 * are decoded and validated against `options.rules` (default: the API's rules) first.
 */
export function registerService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  options?: RegisterOptions,
): void {
  const { definition, implementation } = buildServiceDefinition(service, impl, options);
  server.addService(definition, implementation);
}
