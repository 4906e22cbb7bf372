/**
 * Checks a command makes before it loads a model or starts a run, so that a mistake in an
 * address or port costs a second and one clear line (exit 2) instead of a model load, a run of
 * retry messages and an exit 1.
 */
import { createServer } from "node:net";
import { status } from "@grpc/grpc-js";
import { FeedbackService } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError, RpcError, rpcCodeName } from "../core/src/errors.js";
import { checkHealth, createClient } from "../core/src/grpc/client.js";

/**
 * Deadline of the FeedbackService check. Short: a live scorer answers a health check in
 * milliseconds, and a wrong address should fail before the user has looked away.
 */
export const FEEDBACK_CHECK_MS = 3000;

/** The error of a port another process listens on. */
export function portInUse(port: number, cause?: unknown): ConfigError {
  return new ConfigError(
    `port ${port} is in use: choose another --port (0 picks a free one)`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Fails with a ConfigError unless `port` can be listened on at `host` (0 always can). The probe
 * listener is closed again at once; the real server binds right after.
 */
export async function checkPortFree(port: number, host: string): Promise<void> {
  if (port === 0) return;
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host, exclusive: true }, () => resolve());
    });
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw portInUse(port, cause);
    if (code === "EACCES")
      throw new ConfigError(`port ${port} needs privileges to listen on: choose --port above 1023`, {
        cause,
      });
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN")
      throw new ConfigError(`--host ${host} is not an address of this machine (${code})`, { cause });
    throw new ConfigError(`cannot listen on ${host}:${port}: ${(cause as Error).message}`, { cause });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function unreachable(flag: string, address: string, why: string): ConfigError {
  return new ConfigError(`${flag} ${address}: no FeedbackService answers there (${why})`);
}

/**
 * Fails with a ConfigError naming `flag` unless a FeedbackService answers at `address`: its
 * grpc.health.v1 status for rlaif.feedback.v1.FeedbackService must be SERVING. A server without
 * the health service (e.g. a small Python scorer) passes if it implements Score.
 */
export async function checkFeedback(
  address: string,
  flag: string,
  timeoutMs = FEEDBACK_CHECK_MS,
): Promise<void> {
  let health: string;
  try {
    health = await checkHealth(address, FeedbackService.typeName, timeoutMs);
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    if (err.code === status.UNIMPLEMENTED) return checkScoreExists(address, flag, timeoutMs);
    if (err.code === status.NOT_FOUND)
      throw unreachable(
        flag,
        address,
        `a gRPC server answers but does not serve ${FeedbackService.typeName}`,
      );
    throw unreachable(flag, address, `${rpcCodeName(err.code)}: ${err.details}`);
  }
  if (health !== "SERVING") throw unreachable(flag, address, `its health check says ${health}`);
}

/** Without a health service: an empty Score call tells whether the method exists. */
async function checkScoreExists(address: string, flag: string, timeoutMs: number): Promise<void> {
  const client = createClient(FeedbackService, address, { defaultTimeoutMs: timeoutMs });
  try {
    await client.score({ items: [] });
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    if (err.code === status.UNIMPLEMENTED)
      throw unreachable(
        flag,
        address,
        `a gRPC server answers but does not implement ${FeedbackService.typeName}.Score`,
      );
    if (err.code === status.UNAVAILABLE || err.code === status.DEADLINE_EXCEEDED)
      throw unreachable(flag, address, `${rpcCodeName(err.code)}: ${err.details}`);
    // Any other answer (e.g. INVALID_ARGUMENT for the empty request) comes from a Score handler.
  } finally {
    client.close();
  }
}
