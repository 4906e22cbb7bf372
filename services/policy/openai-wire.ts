/**
 * The OpenAI wire format of the Policy's HTTP API (openai-http.ts): request bodies of
 * `/v1/completions` and `/v1/chat/completions` checked and turned into the fields of a
 * Generate / GenerateStream call, and OpenAI's error shape. Kept apart from the server so the
 * rules (what is accepted, what each field maps to) read in one place.
 *
 * Why translate into Generate rather than sample directly: the HTTP calls then pass the same
 * checks (grpc/rules.ts), the same row gate (RESOURCE_EXHAUSTED → 429) and the same batched
 * sampler as gRPC calls, and share batches with them.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SamplingParamsSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { FinishReason } from "../core/gen/rlaif/common/v1/types_pb.js";
import { ValidationError } from "../core/src/errors.js";

/** New tokens when a request leaves `max_tokens` unset: OpenAI's default for `/v1/completions`. */
export const OPENAI_DEFAULT_MAX_TOKENS = 16;

/**
 * Stop sequence every chat completion gets besides the request's own: the rendered conversation
 * gives each turn its own line, so a model that goes on to write the user's next turn is cut there.
 */
export const CHAT_TURN_STOP = "\nUser:";

/** Roles a chat message may have; `developer` is OpenAI's newer name for `system`. */
const ROLE_LABEL: Readonly<Record<string, string>> = {
  system: "System",
  developer: "System",
  user: "User",
  assistant: "Assistant",
};

/** A completion request reduced to what Generate needs. */
export interface SamplingCall {
  /** Prompt texts; choice `i * n + j` is sample `j` of prompt `i` (OpenAI's order). */
  readonly prompts: string[];
  /** Samples per prompt (`n`). */
  readonly n: number;
  readonly stream: boolean;
  /** `stream_options.include_usage`: a last chunk with the token counts. */
  readonly includeUsage: boolean;
  readonly sampling: MessageInitShape<typeof SamplingParamsSchema>;
  /** Whether the single prompt was sent as a string (errors then name `prompt`, not `prompt[0]`). */
  readonly singlePrompt: boolean;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The body as an object, or a 400 naming the problem. */
export function parseBody(raw: string): Json {
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch (err) {
    throw new ValidationError("body", `is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(body)) throw new ValidationError("body", "must be a JSON object");
  return body;
}

/** `body[field]` when it is present and not null. */
function given(body: Json, field: string): unknown {
  const v = body[field];
  return v === null ? undefined : v;
}

function optionalNumber(body: Json, field: string, integer: boolean): number | undefined {
  const v = given(body, field);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new ValidationError(field, `must be a number, got ${JSON.stringify(v)}`);
  }
  if (integer && !Number.isInteger(v)) throw new ValidationError(field, `must be a whole number, got ${v}`);
  return v;
}

function optionalBoolean(body: Json, field: string): boolean {
  const v = given(body, field);
  if (v === undefined) return false;
  if (typeof v !== "boolean")
    throw new ValidationError(field, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** `stop`: a string or a list of strings (checked for count and size by the Generate rules). */
function stopList(body: Json): string[] {
  const v = given(body, "stop");
  if (v === undefined) return [];
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
  throw new ValidationError("stop", "must be a string or a list of strings");
}

/**
 * Refuses OpenAI parameters this server cannot honour when they ask for something (a value
 * other than the neutral one), rather than silently answering as if they had been applied.
 */
function refuseUnsupported(body: Json, neutral: Readonly<Record<string, (v: unknown) => boolean>>): void {
  for (const [field, isNeutral] of Object.entries(neutral)) {
    const v = given(body, field);
    if (v !== undefined && !isNeutral(v)) {
      throw new ValidationError(field, "is not supported by this server (rlaif Policy); leave it out");
    }
  }
}

const zero = (v: unknown) => v === 0;
const no = (v: unknown) => v === false;
const empty = (v: unknown) => isObject(v) && Object.keys(v).length === 0;

/** The fields both endpoints share: n, sampling, stream. */
function commonFields(
  body: Json,
  prompts: string[],
  singlePrompt: boolean,
  extraStops: string[],
): SamplingCall {
  const maxTokens =
    optionalNumber(body, "max_tokens", true) ?? optionalNumber(body, "max_completion_tokens", true);
  const temperature = optionalNumber(body, "temperature", false);
  const topP = optionalNumber(body, "top_p", false);
  const seed = optionalNumber(body, "seed", true);
  const n = optionalNumber(body, "n", true) ?? 1;
  if (n < 1) throw new ValidationError("n", `must be at least 1, got ${n}`);
  if (seed !== undefined && seed < 0) throw new ValidationError("seed", `must be at least 0, got ${seed}`);
  const stream = optionalBoolean(body, "stream");
  const options = given(body, "stream_options");
  if (options !== undefined && !isObject(options))
    throw new ValidationError("stream_options", "must be an object");
  const includeUsage = options ? optionalBoolean(options, "include_usage") : false;
  const stop = stopList(body);
  return {
    prompts,
    n,
    stream,
    includeUsage,
    singlePrompt,
    sampling: {
      maxNewTokens: maxTokens ?? OPENAI_DEFAULT_MAX_TOKENS,
      ...(temperature !== undefined ? { temperature } : {}),
      ...(topP !== undefined ? { topP } : {}),
      ...(seed !== undefined ? { seed: BigInt(seed) } : {}),
      stop: [...stop, ...extraStops.filter((s) => !stop.includes(s))],
    },
  };
}

/** `POST /v1/completions`: `prompt` is a string or a list of strings (token-id prompts are refused). */
export function completionsCall(body: Json): SamplingCall {
  refuseUnsupported(body, {
    echo: no,
    suffix: (v) => v === "",
    logprobs: zero,
    best_of: (v) => v === 1 || v === given(body, "n"),
    logit_bias: empty,
    presence_penalty: zero,
    frequency_penalty: zero,
  });
  const prompt = given(body, "prompt");
  if (typeof prompt === "string") return commonFields(body, [prompt], true, []);
  if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((p) => typeof p === "string")) {
    return commonFields(body, prompt as string[], false, []);
  }
  if (Array.isArray(prompt) && prompt.length > 0) {
    throw new ValidationError(
      "prompt",
      "must be text: token-id prompts are not supported, send the text instead",
    );
  }
  throw new ValidationError("prompt", "is required: a string or a non-empty list of strings");
}

/** The text of one chat message's `content`: a string, or a list of `{type: "text", text}` parts. */
function messageText(content: unknown, field: string): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        if (!isObject(part) || part.type !== "text" || typeof part.text !== "string") {
          throw new ValidationError(`${field}[${j}]`, 'must be a text part {"type": "text", "text": "..."}');
        }
        return part.text;
      })
      .join("");
  }
  throw new ValidationError(field, "must be a string or a list of text parts");
}

/**
 * The one prompt a conversation is sampled from. The template is deliberately plain (the
 * project's models have no chat template): each message on its own line as `System: …`,
 * `User: …` or `Assistant: …`, then `Assistant:` for the reply to continue, e.g.
 * `[{system: "Be kind"}, {user: "Hi"}]` → `"System: Be kind\nUser: Hi\nAssistant:"`.
 */
export function renderChat(messages: ReadonlyArray<{ role: string; content: string }>): string {
  return `${messages.map((m) => `${ROLE_LABEL[m.role]}: ${m.content}\n`).join("")}Assistant:`;
}

/** `POST /v1/chat/completions`: the messages rendered by {@link renderChat}, stopped at {@link CHAT_TURN_STOP}. */
export function chatCall(body: Json): SamplingCall {
  refuseUnsupported(body, {
    logprobs: no,
    tools: (v) => Array.isArray(v) && v.length === 0,
    functions: (v) => Array.isArray(v) && v.length === 0,
    response_format: (v) => isObject(v) && v.type === "text",
    logit_bias: empty,
    presence_penalty: zero,
    frequency_penalty: zero,
  });
  const raw = given(body, "messages");
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new ValidationError("messages", "is required: a non-empty list of {role, content}");
  }
  const messages = raw.map((m, i) => {
    if (!isObject(m)) throw new ValidationError(`messages[${i}]`, "must be an object {role, content}");
    if (typeof m.role !== "string" || !(m.role in ROLE_LABEL)) {
      throw new ValidationError(
        `messages[${i}].role`,
        `must be one of ${Object.keys(ROLE_LABEL).join(", ")}, got ${JSON.stringify(m.role)}`,
      );
    }
    return { role: m.role, content: messageText(m.content, `messages[${i}].content`) };
  });
  return commonFields(body, [renderChat(messages)], true, [CHAT_TURN_STOP]);
}

/**
 * The OpenAI name of a Generate field in a ValidationError (`sampling.top_p` → `top_p`,
 * `prompts[0]` → `prompt`), so a client is told which of ITS fields to fix.
 */
export function openAiField(field: string, call: SamplingCall, chat: boolean): string {
  const prompt = /^prompts?(\[(\d+)\])?(.*)$/.exec(field);
  if (prompt) {
    if (chat) return "messages";
    return call.singlePrompt ? "prompt" : `prompt[${prompt[2] ?? 0}]`;
  }
  if (field === "samples_per_prompt") return "n";
  const renamed: Record<string, string> = { max_new_tokens: "max_tokens" };
  const sampling = /^sampling\.([a-z_]+)(.*)$/.exec(field);
  if (sampling) return `${renamed[sampling[1] as string] ?? sampling[1]}${sampling[2]}`;
  return field;
}

/** OpenAI's `finish_reason` of a Generate finish reason: EOS and stop sequences are "stop". */
export function finishReason(reason: FinishReason): "stop" | "length" | null {
  if (reason === FinishReason.EOS || reason === FinishReason.STOP) return "stop";
  if (reason === FinishReason.LENGTH || reason === FinishReason.CONTEXT) return "length";
  return null;
}

/** OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`. */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error answer: HTTP status and OpenAI's error body. */
export interface OpenAiError {
  readonly status: number;
  readonly body: OpenAiErrorBody;
}

/** Builds an {@link OpenAiError}. */
export function openAiError(
  status: number,
  message: string,
  type: string,
  code: string | null = null,
  param: string | null = null,
): OpenAiError {
  return { status, body: { error: { message, type, param, code } } };
}
