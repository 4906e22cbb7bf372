/**
 * Runs on an Optimizer in another process, driven over its gRPC API (StartRun, WatchMetrics,
 * GetStatus, ListRuns, CancelRun) as any client would: used by `rlaif up` (a cluster it started)
 * and by `rlaif run`, `status` and `cancel` (a cluster started by hand), and followed with the
 * same display as `rlaif train`.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type ChannelCredentials, status } from "@grpc/grpc-js";
import type { RunConfigSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { OptimizerService, RunState } from "../core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { explicitSettings } from "../core/src/config/load-config.js";
import { getPath, setPath } from "../core/src/config/object-path.js";
import { protoFieldPath, runConfigFromSettings } from "../core/src/config/run-config.js";
import { type RlaifConfig, RUN_SETTINGS, type RunSettings } from "../core/src/config/settings.js";
import { ConfigError, RlaifError, RpcError } from "../core/src/errors.js";
import { type Client, createClient } from "../core/src/grpc/client.js";
import { bearerChannelOptions, resolveControlToken } from "../core/src/grpc/control-token.js";
import { grpcSecurity } from "../core/src/grpc/credentials.js";
import type { FollowedRun } from "./follow-run.js";
import { checkService, PREFLIGHT_MS } from "./preflight.js";
import { isConnectionDrop, type Rejoin, rejoinRun } from "./rejoin-run.js";

/** A client of the Optimizer's gRPC API. */
export type OptimizerClient = Client<typeof OptimizerService>;

/** Longest a run may be watched: a week (WatchMetrics is one long call with a deadline). */
const WATCH_TIMEOUT_MS = 7 * 24 * 3600 * 1000;

const HOST_PORT = /^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/;

/** How a CLI command reaches the Optimizer: TLS credentials, and the control token it sends. */
export interface OptimizerAccess {
  /** Absent: plaintext. */
  readonly credentials?: ChannelCredentials;
  /** Sent as `authorization: Bearer <token>` on every call; absent: none. */
  readonly controlToken?: string;
}

/** The access the settings give (`--tls-ca`/`--tls-cert`/`--tls-key`, the control token). */
export function optimizerAccess(config: RlaifConfig): OptimizerAccess {
  const { client, controlToken } = grpcSecurity(config.services, resolveControlToken(config.services));
  return { ...(client ? { credentials: client } : {}), ...(controlToken ? { controlToken } : {}) };
}

/**
 * Reconnect tries at most 2 s apart (grpc-js backs off to 2 min by default): a follower waiting
 * for a restarted Optimizer notices it is back within a poll or two.
 */
const RECONNECT_OPTIONS = { "grpc.initial_reconnect_backoff_ms": 500, "grpc.max_reconnect_backoff_ms": 2000 };

/** A client of the Optimizer at `address` whose unary calls time out after `rpcTimeoutMs`. */
export function connectOptimizer(
  address: string,
  rpcTimeoutMs: number,
  access: OptimizerAccess = {},
): OptimizerClient {
  return createClient(OptimizerService, address, {
    defaultTimeoutMs: rpcTimeoutMs,
    ...(access.credentials ? { credentials: access.credentials } : {}),
    channelOptions: {
      ...RECONNECT_OPTIONS,
      ...(access.controlToken ? bearerChannelOptions(access.controlToken) : {}),
    },
  });
}

/**
 * The `--optimizer` address (or `fallback`), checked to look like host:port and to answer as an
 * OptimizerService, then connected with the settings' TLS and control token. ConfigError (exit 2)
 * naming the flag otherwise.
 */
export async function openOptimizer(
  raw: unknown,
  config: RlaifConfig,
  fallback?: string,
): Promise<{ optimizer: OptimizerClient; address: string }> {
  const address = typeof raw === "string" ? raw : fallback;
  if (address === undefined)
    throw new ConfigError("--optimizer <host:port> is required (rlaif serve optimizer)");
  if (!HOST_PORT.test(address))
    throw new ConfigError(`--optimizer: must look like host:port, got "${address}"`);
  const access = optimizerAccess(config);
  await checkService(address, "--optimizer", OptimizerService, PREFLIGHT_MS, undefined, access.credentials);
  return { optimizer: connectOptimizer(address, config.services.rpcTimeoutMs, access), address };
}

/** The API name of each run setting's field (`config.learning_rate`) → its flag (`--lr`). */
function flagOfField(field: string): string | undefined {
  if (field === "resume_from") return "--resume";
  if (field === "run_id") return "--run-id";
  const s = RUN_SETTINGS.find((x) => `config.${protoFieldPath(x.proto)}` === field);
  return s && `--${s.flag}`;
}

/**
 * An Optimizer's refusal as what the user can fix (exit 2): a bad or disallowed field (named by
 * its flag), an unknown run, a run that is still active. Other errors pass through.
 */
export function explainRefusal(err: unknown): unknown {
  if (!(err instanceof RpcError)) return err;
  if (err.code === status.INVALID_ARGUMENT) {
    const m = /^([\w.[\]]+): ([\s\S]*)$/.exec(err.details);
    const flag = m && flagOfField(m[1] as string);
    return new ConfigError(flag ? `${flag}: ${m[2]}` : err.details, { cause: err });
  }
  if (err.code === status.NOT_FOUND || err.code === status.FAILED_PRECONDITION)
    return new ConfigError(err.details, { cause: err });
  if (err.code === status.UNAUTHENTICATED) {
    return new ConfigError(
      `${err.details}: pass the Optimizer's control token (--control-token-file <file>, or RLAIF_CONTROL_TOKEN)`,
      { cause: err },
    );
  }
  return err;
}

/**
 * The RunConfig of the run settings the user set (flags or config file), and only those: every
 * other field is left unset, so the Optimizer's own defaults (its `rlaif serve optimizer` run
 * flags) apply to it.
 */
export function explicitRunConfig(config: RlaifConfig): MessageInitShape<typeof RunConfigSchema> {
  const explicit = explicitSettings(config);
  const full = runConfigFromSettings(config.run) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const s of RUN_SETTINGS) {
    if (explicit.has(`run.${s.key}`)) setPath(out, s.proto, getPath(full, s.proto));
  }
  return out as MessageInitShape<typeof RunConfigSchema>;
}

/** Steps the run is configured to take, from ListRuns (newest first; `fallback` if not listed). */
async function totalSteps(optimizer: OptimizerClient, runId: string, fallback: number): Promise<number> {
  const { runs } = await optimizer.listRuns({ pageSize: 100 });
  return runs.find((r) => r.runId === runId)?.steps ?? fallback;
}

/**
 * The run `runId` as a {@link FollowedRun}: its metrics after `fromStep`, then its outcome. With
 * `rejoin`, a dropped connection is not the end: the follower waits for the Optimizer to come
 * back (rejoin-run.ts) and watches the same run again from the step after the last it saw.
 */
export function watchRemoteRun(
  optimizer: OptimizerClient,
  runId: string,
  steps: number,
  fromStep = 0,
  rejoin?: Rejoin,
): FollowedRun {
  /** The call, or on a drop (with `rejoin`) the same call once the run is back. */
  async function again<T>(call: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await call();
      } catch (err) {
        if (!rejoin || !isConnectionDrop(err)) throw err;
        await rejoinRun(optimizer, runId, rejoin, err);
      }
    }
  }
  return {
    runId,
    steps,
    fromStep,
    metrics: (async function* () {
      let seen = fromStep;
      for (;;) {
        try {
          const request = { runId, fromStep: seen + 1 };
          for await (const { metrics } of optimizer.watchMetrics(request, { timeoutMs: WATCH_TIMEOUT_MS })) {
            // A resumed run replays its earlier steps; they were shown already.
            if (!metrics || Number(metrics.step) <= seen) continue;
            seen = Number(metrics.step);
            yield metrics;
          }
          return;
        } catch (err) {
          if (!rejoin || !isConnectionDrop(err)) throw err;
          await rejoinRun(optimizer, runId, rejoin, err);
        }
      }
    })(),
    async result() {
      const s = await again(() => optimizer.getStatus({ runId }));
      if (s.state !== RunState.SUCCEEDED || !s.summary) {
        throw new RlaifError(
          `run ${runId} ended ${RunState[s.state]} at step ${s.step}${s.error ? `: ${s.error}` : ""}`,
        );
      }
      return s.summary;
    },
  };
}

/** What to ask StartRun for. */
export interface RemoteRunRequest {
  config: MessageInitShape<typeof RunConfigSchema>;
  runId?: string;
  resumeFrom?: string;
}

/** Start (or resume) a run and return it to follow; `steps` is the total the display assumes until listed. */
export async function startRemoteRun(
  optimizer: OptimizerClient,
  request: RemoteRunRequest | RunSettings,
  rejoin?: Rejoin,
): Promise<FollowedRun> {
  const req: RemoteRunRequest = "config" in request ? request : { config: runConfigFromSettings(request) };
  const started = await optimizer
    .startRun({
      config: req.config,
      ...(req.runId ? { runId: req.runId } : {}),
      ...(req.resumeFrom ? { resumeFrom: req.resumeFrom } : {}),
    })
    .catch((err: unknown) => {
      throw explainRefusal(err);
    });
  const fallback = "config" in request ? Number(req.config.steps ?? 0) : request.steps;
  const steps = await totalSteps(optimizer, started.runId, fallback);
  return watchRemoteRun(optimizer, started.runId, steps, started.resumedFromStep, rejoin);
}
