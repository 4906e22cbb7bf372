/**
 * The Policy's OpenAI-compatible HTTP API, so any OpenAI SDK (and rlaif's own LLM judge,
 * feedback/judge.ts) can sample an rlaif policy:
 * - `GET /v1/models`: the one model this replica serves, with its weights version.
 * - `POST /v1/completions`: prompt(s) → `n` completions each; `stream: true` answers with
 *   Server-Sent Events in OpenAI's chunk format, ending with `data: [DONE]`.
 * - `POST /v1/chat/completions`: the messages rendered into one prompt (openai-wire.ts's template).
 * Every call goes through the same PolicyService handlers as gRPC (Generate for whole answers,
 * one GenerateStream per streamed choice), so HTTP and gRPC calls share checks, the row gate
 * and decoding batches. Errors use OpenAI's error body: 400 naming the field, 401 for a missing or
 * wrong bearer token, 404 for an unknown model or path, 429 when the replica's queue is full,
 * 503 while the server shuts down.
 *
 * Streamed choices of one request each run as their own GenerateStream, choice k seeded with
 * `seed + k`: with n = 1 a stream spells exactly the unstreamed text; with n > 1 the choices
 * differ from the unstreamed ones (those are rows of one Generate call, row r on stream (seed, r)).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { GetInfoRequestSchema, GetInfoResponseSchema } from "../core/gen/rlaif/policy/v1/policy_pb.js";
import { ConfigError, OverloadedError, ValidationError } from "../core/src/errors.js";
import { callContext, type PolicyHandlers, streamAnswer, wholeAnswer } from "./openai-answers.js";
import {
  chatCall,
  completionsCall,
  type OpenAiError,
  openAiError,
  openAiField,
  parseBody,
  type SamplingCall,
} from "./openai-wire.js";

/** Where the bearer token may come from besides the settings (kept out of argv, which `ps` shows). */
export const OPENAI_TOKEN_ENV = "RLAIF_OPENAI_TOKEN";

/** Largest request body accepted (1 MiB; the Generate rules bound prompts far below it). */
const MAX_BODY_BYTES = 1 << 20;

/**
 * The API's bearer token: `services.openaiToken`, else the first line of `services.openaiTokenFile`,
 * else RLAIF_OPENAI_TOKEN, else none (open). ConfigError naming the setting for an unusable file.
 */
export function resolveOpenAiToken(
  s: { readonly openaiToken: string; readonly openaiTokenFile: string },
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (s.openaiToken) return s.openaiToken;
  if (s.openaiTokenFile) {
    let text: string;
    try {
      text = readFileSync(s.openaiTokenFile, "utf8");
    } catch (err) {
      throw new ConfigError(`services.openaiTokenFile ${s.openaiTokenFile}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const token = text.split(/\r?\n/)[0]?.trim() ?? "";
    if (!token) throw new ConfigError(`services.openaiTokenFile ${s.openaiTokenFile}: holds no token`);
    return token;
  }
  return env[OPENAI_TOKEN_ENV] || undefined;
}

/** Options of the HTTP API. */
export interface OpenAiHttpOptions {
  /** Port; 0 picks a free one (tests). The CLI's `--openai-port 0` means "off" and never gets here. */
  port: number;
  /** Interface; default 127.0.0.1, as the gRPC server's. */
  host?: string;
  /** The model id listed and accepted (`services.openaiModel`). */
  model: string;
  /** Bearer token every call must carry; none = open. */
  token?: string;
  log?: (line: string) => void;
}

/** A listening HTTP API. */
export interface OpenAiHttpServer {
  readonly port: number;
  /** Base URL of the API, e.g. "http://127.0.0.1:8000/v1" (what OpenAI clients take as baseURL). */
  readonly baseUrl: string;
  /** Answers new calls 503 while running ones finish (for up to `graceMs`), then cuts the rest and stops listening. */
  close(graceMs?: number): Promise<void>;
}

function sameToken(given: string, expected: string): boolean {
  const digest = (t: string) => createHash("sha256").update(t).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new ValidationError("body", `must be at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** An error answer for a failure of a call (`call` given once the body has been read). */
function errorFor(err: unknown, call: SamplingCall | undefined, chat: boolean): OpenAiError | undefined {
  if (err instanceof ValidationError) {
    const param = call ? openAiField(err.field, call, chat) : err.field;
    return openAiError(400, `${param}: ${err.reason}`, "invalid_request_error", "invalid_value", param);
  }
  if (err instanceof OverloadedError)
    return openAiError(429, err.message, "rate_limit_error", "rate_limit_exceeded");
  return undefined;
}

/** Start the API in front of `handlers` (see the module doc). */
export async function startOpenAiServer(
  handlers: PolicyHandlers,
  opts: OpenAiHttpOptions,
): Promise<OpenAiHttpServer> {
  const host = opts.host ?? "127.0.0.1";
  let closing = false;
  const running = new Set<Promise<void>>();

  const models = async () => {
    const req = create(GetInfoRequestSchema, {});
    const ctx = callContext("/v1/models", new AbortController().signal);
    const info = create(GetInfoResponseSchema, await handlers.getInfo(req, ctx));
    return {
      id: opts.model,
      object: "model" as const,
      created: 0,
      owned_by: "rlaif",
      weights_version: Number(info.weightsVersion),
      model_kind: info.modelKind,
    };
  };

  const serve = async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> => {
    const fail = (e: OpenAiError) => sendJson(res, e.status, e.body);
    if (closing)
      return fail(
        openAiError(
          503,
          "the Policy is shutting down; retry another replica",
          "server_error",
          "shutting_down",
        ),
      );
    if (opts.token) {
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
      if (!m || !sameToken(m[1] as string, opts.token)) {
        const why = m
          ? "Incorrect API key provided"
          : "Missing bearer token: send the header Authorization: Bearer <token>";
        return fail(openAiError(401, why, "invalid_request_error", "invalid_api_key"));
      }
    }
    const path = (req.url ?? "/").split("?")[0] as string;
    const routes: Record<string, string> = {
      "/v1/models": "GET",
      "/v1/completions": "POST",
      "/v1/chat/completions": "POST",
    };
    const method = routes[path] ?? (path.startsWith("/v1/models/") ? "GET" : undefined);
    if (!method)
      return fail(openAiError(404, `no such endpoint: ${path}`, "invalid_request_error", "unknown_url"));
    if (req.method !== method) {
      return fail(
        openAiError(
          405,
          `${path} takes ${method}, not ${req.method}`,
          "invalid_request_error",
          "method_not_allowed",
        ),
      );
    }
    if (path === "/v1/models") return sendJson(res, 200, { object: "list", data: [await models()] });
    if (method === "GET") {
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      if (id !== opts.model) return fail(modelNotFound(id));
      return sendJson(res, 200, await models());
    }
    const chat = path === "/v1/chat/completions";
    let call: SamplingCall | undefined;
    try {
      const body = parseBody(await readBody(req));
      if (typeof body.model !== "string")
        throw new ValidationError("model", "is required: the model id of GET /v1/models");
      if (body.model !== opts.model) return fail(modelNotFound(body.model));
      call = chat ? chatCall(body) : completionsCall(body);
      if (call.stream) await streamAnswer(handlers, call, chat, opts.model, res, signal);
      else sendJson(res, 200, await wholeAnswer(handlers, call, chat, opts.model, signal));
    } catch (err) {
      const known = errorFor(err, call, chat);
      if (!known && !signal.aborted)
        opts.log?.(`policy: OpenAI API ${path}: ${(err as Error).stack ?? String(err)}`);
      const answer = known ?? openAiError(500, `internal error: ${(err as Error).message}`, "server_error");
      if (res.headersSent) {
        // mid-stream: OpenAI clients read an `error` event as a failed call
        if (!res.writableEnded) res.end(`data: ${JSON.stringify(answer.body)}\n\n`);
      } else fail(answer);
    }
  };

  const modelNotFound = (id: unknown) =>
    openAiError(
      404,
      `The model ${JSON.stringify(id)} does not exist; this server serves "${opts.model}"`,
      "invalid_request_error",
      "model_not_found",
      "model",
    );

  const server = createServer((req, res) => {
    const aborter = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) aborter.abort();
    });
    const done = serve(req, res, aborter.signal)
      .catch((err: unknown) => {
        opts.log?.(`policy: OpenAI API: ${String(err)}`);
        if (!res.headersSent) sendJson(res, 500, openAiError(500, "internal error", "server_error").body);
        else res.end();
      })
      .finally(() => running.delete(done));
    running.add(done);
  });
  server.listen(opts.port, host);
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(":") ? `[${host}]` : host;
  const baseUrl = `http://${shown}:${port}/v1`;
  opts.log?.(
    `policy: OpenAI-compatible API on ${baseUrl}${opts.token ? " (bearer token required)" : " (no token: open)"}`,
  );
  return {
    port,
    baseUrl,
    async close(graceMs = 2000) {
      // The listener stays open while running calls finish, so a call arriving meanwhile is told
      // 503 (retry another replica) rather than finding the port closed; then everything is cut.
      closing = true;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...running]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, graceMs);
        }),
      ]);
      clearTimeout(timer);
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await stopped;
    },
  };
}
