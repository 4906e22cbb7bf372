/**
 * The answers of the Policy's OpenAI API (openai-http.ts) to a checked request: one Generate call
 * for a whole answer, or one GenerateStream per choice sent on as Server-Sent Events. Both call
 * the replica's own PolicyService handlers, so HTTP calls share the gRPC calls' request rules,
 * row gate and decoding batches.
 */
import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { create } from "@bufbuild/protobuf";
import {
  GenerateRequestSchema,
  GenerateResponseSchema,
  GenerateStreamRequestSchema,
  GenerateStreamResponseSchema,
  type PolicyService,
} from "../core/gen/rlaif/policy/v1/policy_pb.js";
import type { CallContext, ServiceImpl } from "../core/src/grpc/adapter.js";
import { generateRequestRules, generateStreamRequestRules } from "../core/src/grpc/rules.js";
import { validate } from "../core/src/grpc/validation.js";
import { finishReason, type SamplingCall } from "./openai-wire.js";

/**
 * What the API calls: the replica's own PolicyService handlers, and a count of a prompt's tokens
 * (for a stream's `usage`, which GenerateStream does not report).
 */
export type PolicyHandlers = Pick<
  ServiceImpl<typeof PolicyService>,
  "generate" | "generateStream" | "getInfo"
> & {
  promptTokens(text: string): Promise<number>;
};

/** A call's context for the handlers: no deadline (HTTP has none); the signal fires when the client goes. */
export function callContext(method: string, signal: AbortSignal): CallContext {
  return {
    method,
    deadline: undefined,
    signal,
    metadata: {},
    timeRemainingMs: () => Number.POSITIVE_INFINITY,
  };
}

/** An id for a response, as OpenAI's (`cmpl-…`, `chatcmpl-…`). */
function responseId(chat: boolean): string {
  return `${chat ? "chatcmpl" : "cmpl"}-${randomBytes(12).toString("hex")}`;
}

/** One Generate call for the whole request; choices in Generate's row order (prompt-major). */
export async function wholeAnswer(
  handlers: PolicyHandlers,
  call: SamplingCall,
  chat: boolean,
  model: string,
  signal: AbortSignal,
): Promise<unknown> {
  const req = create(GenerateRequestSchema, {
    prompts: call.prompts,
    samplesPerPrompt: call.n,
    sampling: call.sampling,
  });
  validate(generateRequestRules, req);
  const got = create(
    GenerateResponseSchema,
    await handlers.generate(req, callContext(chat ? "/v1/chat/completions" : "/v1/completions", signal)),
  );
  const promptTokens = call.prompts.reduce(
    (sum, _p, i) => sum + (got.completions.find((c) => c.promptIndex === i)?.promptTokens.length ?? 0),
    0,
  );
  const completionTokens = got.completions.reduce((sum, c) => sum + c.tokens.length, 0);
  return {
    id: responseId(chat),
    object: chat ? "chat.completion" : "text_completion",
    created: Math.floor(Date.now() / 1000),
    model,
    system_fingerprint: `weights-v${got.weightsVersion}`,
    choices: got.completions.map((c, index) => {
      const finish_reason = finishReason(c.finishReason);
      return chat
        ? { index, message: { role: "assistant", content: c.text }, logprobs: null, finish_reason }
        : { index, text: c.text, logprobs: null, finish_reason };
    }),
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    },
  };
}

/**
 * Server-Sent Events: one GenerateStream per choice, all running at once (so they share decoding
 * batches), each token's text an event; `[DONE]` after the last. With `include_usage`, a last
 * chunk with empty choices carries the counts (prompt tokens = those of each prompt once).
 */
export async function streamAnswer(
  handlers: PolicyHandlers,
  call: SamplingCall,
  chat: boolean,
  model: string,
  res: ServerResponse,
  signal: AbortSignal,
): Promise<void> {
  const seed = BigInt(call.sampling.seed ?? 0n);
  const requests = call.prompts.flatMap((prompt) =>
    Array.from({ length: call.n }, (_, k) =>
      create(GenerateStreamRequestSchema, {
        prompt,
        sampling: { ...call.sampling, seed: (seed + BigInt(k)) % 2n ** 32n },
      }),
    ),
  );
  // every request is checked before any event is sent, so a bad one is still a plain 400
  for (const r of requests) validate(generateStreamRequestRules, r);
  validate(
    generateRequestRules,
    create(GenerateRequestSchema, { prompts: call.prompts, samplesPerPrompt: call.n }),
  );
  const id = responseId(chat);
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: chat ? "chat.completion.chunk" : "text_completion", created, model };
  const aborter = new AbortController();
  const stop = () => aborter.abort();
  signal.addEventListener("abort", stop, { once: true });
  const ctx = callContext(chat ? "/v1/chat/completions" : "/v1/completions", aborter.signal);
  const send = (chunk: object) => {
    if (!res.headersSent) {
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        connection: "keep-alive",
      });
    }
    res.write(`data: ${JSON.stringify({ ...head, ...chunk })}\n\n`);
  };
  let completionTokens = 0;
  const choice = async (req: (typeof requests)[number], index: number) => {
    let first = true;
    for await (const init of handlers.generateStream(req, ctx)) {
      const piece = create(GenerateStreamResponseSchema, init);
      completionTokens++;
      const finish_reason = finishReason(piece.finishReason);
      const fingerprint = `weights-v${piece.weightsVersion}`;
      if (chat) {
        const delta = first ? { role: "assistant", content: piece.text } : { content: piece.text };
        send({ system_fingerprint: fingerprint, choices: [{ index, delta, logprobs: null, finish_reason }] });
      } else {
        send({
          system_fingerprint: fingerprint,
          choices: [{ index, text: piece.text, logprobs: null, finish_reason }],
        });
      }
      first = false;
    }
  };
  try {
    await Promise.all(
      requests.map((r, index) =>
        choice(r, index).catch((err: unknown) => {
          aborter.abort();
          throw err;
        }),
      ),
    );
  } finally {
    signal.removeEventListener("abort", stop);
  }
  if (call.includeUsage) {
    const counts = await Promise.all(call.prompts.map((p) => handlers.promptTokens(p)));
    const prompt_tokens = counts.reduce((a, b) => a + b, 0);
    send({
      choices: [],
      usage: {
        prompt_tokens,
        completion_tokens: completionTokens,
        total_tokens: prompt_tokens + completionTokens,
      },
    });
  }
  if (!res.headersSent) send({ choices: [] });
  res.end("data: [DONE]\n\n");
}
