/**
 * Checks a command makes before it loads a model or starts a run, so that a mistake in an
 * address or port costs a second and one clear line (exit 2) instead of a model load, a run of
 * retry messages and an exit 1.
 */
import { createServer } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { type ChannelCredentials, status } from "@grpc/grpc-js";
import { FeedbackService } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError, RpcError, rpcCodeName } from "../core/src/errors.js";
import { checkHealth, createClient } from "../core/src/grpc/client.js";

/**
 * Deadline of a check that a service answers. Short: a live server answers a health check in
 * milliseconds, and a wrong address should fail before the user has looked away.
 */
export const PREFLIGHT_MS = 3000;

/** The error of a port another process listens on; `flag` is the setting that chose it. */
export function portInUse(port: number, cause?: unknown, flag = "port"): ConfigError {
  return new ConfigError(
    `port ${port} is in use: choose another --${flag}${flag === "port" ? " (0 picks a free one)" : ""}`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Fails with a ConfigError unless `port` can be listened on at `host` (0 always can). The probe
 * listener is closed again at once; the real server binds right after. `flag` names the setting in
 * the refusal (`openai-port` for the Policy's HTTP API).
 */
export async function checkPortFree(port: number, host: string, flag = "port"): Promise<void> {
  if (port === 0) return;
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host, exclusive: true }, () => resolve());
    });
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw portInUse(port, cause, flag);
    if (code === "EACCES")
      throw new ConfigError(`port ${port} needs privileges to listen on: choose --${flag} above 1023`, {
        cause,
      });
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN")
      throw new ConfigError(`--host ${host} is not an address of this machine (${code})`, { cause });
    throw new ConfigError(`cannot listen on ${host}:${port}: ${(cause as Error).message}`, { cause });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** A probe for a server without the health service: resolves when it serves the service. */
type Probe = (address: string, timeoutMs: number) => Promise<void>;

function unreachable(flag: string, address: string, service: DescService, why: string): ConfigError {
  return new ConfigError(`${flag} ${address}: no ${service.name} answers there (${why})`);
}

function why(err: RpcError): string {
  return `${rpcCodeName(err.code)}: ${err.details.replace(/\.? ?Resolution note: ?$/, "")}`;
}

/**
 * Fails with a ConfigError naming `flag` unless `service` answers at `address`: its
 * grpc.health.v1 status must be SERVING. A server without the health service is asked `probe`
 * instead (when given), which rejects with UNIMPLEMENTED when the service is not there.
 * `credentials`: TLS of the check (default plaintext), the same the real client will use.
 */
export async function checkService(
  address: string,
  flag: string,
  service: DescService,
  timeoutMs: number,
  probe?: Probe,
  credentials?: ChannelCredentials,
): Promise<void> {
  let health: string;
  try {
    health = await checkHealth(address, service.typeName, timeoutMs, credentials);
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    if (err.code === status.UNIMPLEMENTED && probe) {
      try {
        return await probe(address, timeoutMs);
      } catch (probeErr) {
        if (!(probeErr instanceof RpcError)) throw probeErr;
        if (probeErr.code !== status.UNIMPLEMENTED) throw unreachable(flag, address, service, why(probeErr));
        throw unreachable(
          flag,
          address,
          service,
          `a gRPC server answers but does not implement ${service.typeName}`,
        );
      }
    }
    if (err.code === status.NOT_FOUND || err.code === status.UNIMPLEMENTED)
      throw unreachable(
        flag,
        address,
        service,
        `a gRPC server answers but does not serve ${service.typeName}`,
      );
    throw unreachable(flag, address, service, why(err));
  }
  if (health !== "SERVING") throw unreachable(flag, address, service, `its health check says ${health}`);
}

/**
 * An empty Score call: answered by a Score handler (most likely INVALID_ARGUMENT for the empty
 * request), or UNIMPLEMENTED where there is none.
 */
async function scoreProbe(
  address: string,
  timeoutMs: number,
  credentials?: ChannelCredentials,
): Promise<void> {
  const client = createClient(FeedbackService, address, {
    defaultTimeoutMs: timeoutMs,
    ...(credentials ? { credentials } : {}),
  });
  try {
    await client.score({ items: [] });
  } catch (err) {
    const code = err instanceof RpcError ? err.code : status.UNKNOWN;
    if (code === status.UNIMPLEMENTED || code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED)
      throw err;
  } finally {
    client.close();
  }
}

/**
 * Fails with a ConfigError naming `flag` unless a FeedbackService answers at `address`. A server
 * without the health service (e.g. a small Python scorer) passes if it implements Score.
 * `credentials`: TLS of the check (default plaintext).
 */
export function checkFeedback(
  address: string,
  flag: string,
  timeoutMs = PREFLIGHT_MS,
  credentials?: ChannelCredentials,
): Promise<void> {
  const probe: Probe = (a, t) => scoreProbe(a, t, credentials);
  return checkService(address, flag, FeedbackService, timeoutMs, probe, credentials);
}
