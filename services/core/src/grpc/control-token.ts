/**
 * Bearer tokens on the control RPCs. Why: with the API reachable, any caller could start, cancel,
 * checkpoint or pause training (a fuzzer's mutated StartRun once trained a full run). With a
 * token set (`services.controlToken`, `services.controlTokenFile` or RLAIF_CONTROL_TOKEN), those
 * calls must carry metadata `authorization: Bearer <token>`, or they are answered UNAUTHENTICATED
 * before any handler runs. The read-only RPCs (GetStatus, ListRuns, WatchMetrics) stay open, so
 * dashboards and probes need no secret.
 *
 * A token is not encryption: over plaintext anyone on the path can read it. Beyond loopback use
 * it together with TLS (credentials.ts).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { OptimizerService } from "../../gen/rlaif/optimizer/v1/optimizer_pb.js";
import { ConfigError } from "../errors.js";
import { methodPath } from "./adapter.js";

/** The environment variable a token may come from (kept out of argv, which `ps` shows). */
export const CONTROL_TOKEN_ENV = "RLAIF_CONTROL_TOKEN";

/** Full paths of the RPCs that change what the system does: the ones a token guards. */
export const CONTROL_RPCS: ReadonlySet<string> = new Set(
  [
    OptimizerService.method.startRun,
    OptimizerService.method.cancelRun,
    OptimizerService.method.checkpoint,
    OptimizerService.method.pauseRun,
    OptimizerService.method.unpauseRun,
  ].map(methodPath),
);

/** Where a token may be given; the first non-empty one wins. */
export interface ControlTokenSources {
  readonly controlToken: string;
  readonly controlTokenFile: string;
}

/**
 * The control token of a process: `services.controlToken`, else the first line of
 * `services.controlTokenFile`, else RLAIF_CONTROL_TOKEN, else none (control RPCs open).
 * ConfigError naming the setting when the file cannot be read or holds no token.
 */
export function resolveControlToken(
  s: ControlTokenSources,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (s.controlToken) return s.controlToken;
  if (s.controlTokenFile) {
    let text: string;
    try {
      text = readFileSync(s.controlTokenFile, "utf8");
    } catch (err) {
      throw new ConfigError(`services.controlTokenFile ${s.controlTokenFile}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const token = text.split(/\r?\n/)[0]?.trim() ?? "";
    if (!token) throw new ConfigError(`services.controlTokenFile ${s.controlTokenFile}: holds no token`);
    return token;
  }
  return env[CONTROL_TOKEN_ENV] || undefined;
}

/** Constant-time equality of two texts of any length (both are hashed to 32 bytes first). */
function sameToken(given: string, expected: string): boolean {
  const digest = (t: string) => createHash("sha256").update(t).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Why a call's metadata does not carry `token`, or undefined when it does. */
export function tokenProblem(metadata: grpc.Metadata, token: string): string | undefined {
  const values = metadata.get("authorization");
  if (values.length === 0) return "this call needs metadata authorization: Bearer <control token>";
  const m = /^Bearer (.+)$/.exec(String(values[0]));
  if (!m || !sameToken(m[1] as string, token)) return "the control token is wrong";
  return undefined;
}

/**
 * Wrap the handlers of `definition` whose paths are in `guarded` so that a call without the
 * token is answered UNAUTHENTICATED before its handler runs. Other handlers pass unchanged.
 */
export function guardHandlers(
  definition: grpc.ServiceDefinition,
  implementation: grpc.UntypedServiceImplementation,
  token: string,
  guarded: ReadonlySet<string> = CONTROL_RPCS,
): grpc.UntypedServiceImplementation {
  const out: grpc.UntypedServiceImplementation = { ...implementation };
  for (const [name, method] of Object.entries(definition)) {
    const handler = implementation[name];
    if (!handler || !guarded.has(method.path)) continue;
    const refuse = (problem: string) => ({
      code: grpc.status.UNAUTHENTICATED,
      details: `${method.path}: ${problem}`,
    });
    if (method.requestStream) {
      throw new ConfigError(`${method.path}: control tokens guard unary and server-streaming calls only`);
    }
    if (method.responseStream) {
      const stream = handler as grpc.handleServerStreamingCall<unknown, unknown>;
      out[name] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        const problem = tokenProblem(call.metadata, token);
        if (problem) call.emit("error", refuse(problem));
        else stream(call);
      }) as grpc.UntypedHandleCall;
    } else {
      const unary = handler as grpc.handleUnaryCall<unknown, unknown>;
      out[name] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const problem = tokenProblem(call.metadata, token);
        if (problem) callback(refuse(problem));
        else unary(call, callback);
      }) as grpc.UntypedHandleCall;
    }
  }
  return out;
}

/**
 * Channel options that make a client send `authorization: Bearer <token>` on every call (a
 * grpc-js client interceptor, so createClient needs no change). Servers ignore it on the
 * read-only RPCs.
 */
export function bearerChannelOptions(token: string): grpc.ChannelOptions {
  const interceptor: grpc.Interceptor = (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
  return { interceptors: [interceptor] };
}
