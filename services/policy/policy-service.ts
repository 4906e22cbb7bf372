/**
 * rlaif.policy.v1.PolicyService handlers over a PolicyReplica. Field-level rules (counts, sizes,
 * ranges) are checked by the shared gRPC layer; what depends on the model (does a prompt fit in
 * the context window?) is checked here and reported as INVALID_ARGUMENT naming the field.
 */
import type { MessageShape } from "@bufbuild/protobuf";
import type { SamplingParamsSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { FinishReason } from "../core/gen/rlaif/common/v1/types_pb.js";
import { type PolicyService, WeightsSelector } from "../core/gen/rlaif/policy/v1/policy_pb.js";
import { PreconditionError, ValidationError } from "../core/src/errors.js";
import type { CallContext, ServiceImpl } from "../core/src/grpc/adapter.js";
import { completionText, stopBytes, stopHoldback, textLength } from "../core/src/model/sampling.js";
import type { Tokenizer } from "../core/src/model/tokenizer-types.js";
import { RowGate } from "./batcher.js";
import type { GenerationResult, LoadedModel, SamplingParams } from "./loaded-model.js";
import type { PolicyReplica } from "./policy-replica.js";

/** New tokens generated when a request leaves max_new_tokens unset. */
export const DEFAULT_MAX_NEW_TOKENS = 32;

const FINISH: Record<GenerationResult["finishReason"], FinishReason> = {
  length: FinishReason.LENGTH,
  eos: FinishReason.EOS,
  stop: FinishReason.STOP,
  context: FinishReason.CONTEXT,
};

/**
 * Sampling options from the request, with the server defaults for unset fields: 32 new tokens,
 * temperature 1 (the policy's own distribution), no top-k or top-p, seed 0. The rules (grpc/rules.ts)
 * have already refused out-of-range values, a seed above 2³²−1 included.
 */
export function samplingOptions(p: MessageShape<typeof SamplingParamsSchema> | undefined): SamplingParams {
  return {
    maxNewTokens: p?.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS,
    temperature: p?.temperature ?? 1,
    topK: p?.topK ?? 0,
    topP: p?.topP ?? 1,
    seed: Number(p?.seed ?? 0n),
    stopAtEos: !p?.ignoreEos,
    stop: [...(p?.stop ?? [])],
  };
}

/**
 * Throws INVALID_ARGUMENT unless (BOS +) prompt + `extra` tokens fit in the context window; `bos`
 * is 1 when the model's tokenizer puts a BOS before the prompt, 0 when it has none.
 */
function checkFits(field: string, tokens: number, extra: number, model: LoadedModel, what: string): void {
  const bos = model.tokenizer.bos === null ? 0 : 1;
  if (bos + tokens + extra > model.contextLength) {
    throw new ValidationError(
      field,
      `${tokens} prompt tokens + ${extra} ${what}${bos ? " + BOS" : ""} exceed the model's context of ${model.contextLength} tokens`,
    );
  }
}

/** Throws INVALID_ARGUMENT naming `field[j]` for the first id outside the model's vocabulary. */
function checkIds(field: string, ids: readonly number[], vocabSize: number): void {
  const j = ids.findIndex((t) => t >= vocabSize);
  if (j >= 0)
    throw new ValidationError(`${field}[${j}]`, `must be a token id below ${vocabSize}, got ${ids[j]}`);
}

/** How much work a replica takes on before refusing calls (see RowGate). */
export interface ServingLimits {
  /** Most rows decoded together (and sequences counted as one batch of scoring). */
  batchRows: number;
  /** Most rows held beyond one batch before calls fail with RESOURCE_EXHAUSTED. */
  queueRows: number;
}

/** Runs `work` with `n` rows admitted through `gate` (OverloadedError when it is full). */
async function admitted<T>(gate: RowGate, n: number, work: () => Promise<T>): Promise<T> {
  const release = gate.admit(n);
  try {
    return await work();
  } finally {
    release();
  }
}

/** Longest a Generate call waits for its min_weights_version (policy.proto). */
export const MAX_VERSION_WAIT_MS = 10_000;
/** Time left before the caller's deadline to answer why, rather than run into it. */
const VERSION_ANSWER_MARGIN_MS = 50;

/**
 * Waits (MAX_VERSION_WAIT_MS at most, never past the call's deadline) until the replica serves
 * version `min` or newer; PreconditionError (FAILED_PRECONDITION) if it does not get there.
 */
async function versionAtLeast(replica: PolicyReplica, min: number, ctx: CallContext): Promise<void> {
  if (replica.serving.version >= min) return;
  const waitMs = Math.min(MAX_VERSION_WAIT_MS, ctx.timeRemainingMs() - VERSION_ANSWER_MARGIN_MS);
  const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(Math.max(0, waitMs))]);
  if (await replica.waitForVersion(min, signal)) return;
  throw new PreconditionError(
    `this replica serves weights v${replica.serving.version}; the request needs v${min} or newer`,
  );
}

/** The PolicyService handlers. */
export function policyService(
  replica: PolicyReplica,
  limits: ServingLimits,
): ServiceImpl<typeof PolicyService> {
  const rowGate = new RowGate(limits.batchRows, limits.queueRows, "Generate rows");
  const sequenceGate = new RowGate(limits.batchRows, limits.queueRows, "Logprobs sequences");
  return {
    async generate(req, ctx) {
      const params = samplingOptions(req.sampling);
      const samples = req.samplesPerPrompt || 1;
      await versionAtLeast(replica, Number(req.minWeightsVersion ?? 0n), ctx);
      return admitted(rowGate, req.prompts.length * samples, () =>
        replica.withModels(async ({ model, version }) => {
          const encoded = req.prompts.map((p) => model.tokenizer.encode(p));
          encoded.forEach((t, i) => {
            checkFits(`prompts[${i}]`, t.length, 1, model, "new token (at least)");
          });
          const rows = encoded.flatMap((t) => Array.from({ length: samples }, () => t));
          const results = await model.generate(rows, params, undefined, ctx.signal);
          return {
            weightsVersion: BigInt(version),
            completions: results.map((r, row) => ({
              promptIndex: Math.floor(row / samples),
              sampleIndex: row % samples,
              text: completionText(r, model.tokenizer),
              promptTokens: rows[row],
              tokens: r.tokens,
              tokenBytes: r.tokens.map((id) => model.tokenizer.tokenBytes(id)),
              logprobs: r.logprobs,
              finishReason: FINISH[r.finishReason],
              stop: r.stop ?? "",
            })),
          };
        }),
      );
    },

    async *generateStream(req, ctx) {
      const params = samplingOptions(req.sampling);
      // Generation runs in the replica's batch and hands each token over as it is sampled;
      // this generator sends it on. A token is held back until the next one (or the end) shows
      // whether it is the last, which carries the finish reason. Its text is held back further
      // while it could be the start of a stop sequence, and a matched stop is never sent, so the
      // pieces join to exactly Generate's text.
      const tokens: { token: number; logprob: number }[] = [];
      let wake: (() => void) | null = null;
      // Written by the generation task, read by this generator (an object, so neither side's
      // type narrowing assumes the other never writes).
      // `tokenizer` is the sampling model's, set before its first token is handed over.
      const state: {
        version: bigint;
        tokenizer: Tokenizer | null;
        finished: GenerationResult | null;
        failure: unknown;
      } = { version: 0n, tokenizer: null, finished: null, failure: null };
      const notify = () => {
        wake?.();
        wake = null;
      };
      const work = admitted(rowGate, 1, () =>
        replica.withModels(async ({ model, version: v }) => {
          const prompt = model.tokenizer.encode(req.prompt);
          checkFits("prompt", prompt.length, 1, model, "new token (at least)");
          state.tokenizer = model.tokenizer;
          state.version = BigInt(v);
          const onToken = (_row: number, token: number, logprob: number) => {
            tokens.push({ token, logprob });
            notify();
          };
          const [result] = await model.generate([prompt], params, onToken, ctx.signal);
          state.finished = result ?? null;
        }),
      )
        .catch((err: unknown) => {
          state.failure = err;
        })
        .finally(notify);
      const decoder = new TextDecoder("utf-8", { fatal: false });
      const stops = stopBytes(params.stop);
      const bytes: number[] = [];
      let sent = 0;
      /** Decoded text of bytes[sent, upTo): a partial UTF-8 character waits for its last byte. */
      const release = (upTo: number): string => {
        const text =
          upTo > sent ? decoder.decode(Uint8Array.from(bytes.slice(sent, upTo)), { stream: true }) : "";
        sent = Math.max(sent, upTo);
        return text;
      };
      for (let i = 0; ; i++) {
        while (tokens.length <= i + 1 && !state.finished && !state.failure) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
        if (state.failure) throw state.failure;
        const item = tokens[i];
        if (!item) break;
        const finished = state.finished;
        const last = finished !== null && i === tokens.length - 1;
        bytes.push(...(state.tokenizer as Tokenizer).tokenBytes(item.token));
        const text = last
          ? release(textLength(bytes, finished.stop)) + decoder.decode()
          : release(bytes.length - stopHoldback(bytes, stops));
        yield {
          index: i,
          token: item.token,
          text,
          logprob: item.logprob,
          weightsVersion: state.version,
          finishReason: last && finished ? FINISH[finished.finishReason] : FinishReason.UNSPECIFIED,
          stop: last ? (finished.stop ?? "") : "",
        };
      }
      await work;
    },

    async logprobs(req) {
      return admitted(sequenceGate, req.sequences.length, () =>
        replica.withModels(async (current, reference) => {
          const chosen = req.weights === WeightsSelector.REFERENCE ? reference : current;
          const { tokenizer } = chosen.model;
          const seqs = req.sequences.map((s) => ({
            prompt: s.promptTokens.length ? [...s.promptTokens] : tokenizer.encode(s.prompt),
            completion: s.completionTokens.length ? [...s.completionTokens] : tokenizer.encode(s.completion),
          }));
          req.sequences.forEach((s, i) => {
            checkIds(`sequences[${i}].prompt_tokens`, s.promptTokens, chosen.model.vocabSize);
            checkIds(`sequences[${i}].completion_tokens`, s.completionTokens, chosen.model.vocabSize);
          });
          seqs.forEach((s, i) => {
            if (s.completion.length === 0)
              throw new ValidationError(`sequences[${i}].completion`, "must not be empty");
            checkFits(
              `sequences[${i}]`,
              s.prompt.length,
              s.completion.length,
              chosen.model,
              "completion tokens",
            );
          });
          const lps = await chosen.model.logprobs(
            seqs.map((s) => s.prompt),
            seqs.map((s) => s.completion),
          );
          return { weightsVersion: BigInt(chosen.version), results: lps.map((logprobs) => ({ logprobs })) };
        }),
      );
    },

    async getInfo() {
      return replica.withModels((current, reference) => ({
        modelKind: current.model.kind,
        tokenizer: current.model.tokenizer.describe(),
        vocabSize: current.model.vocabSize,
        contextLength: current.model.contextLength,
        parameterCount: BigInt(current.model.parameterCount),
        weightsVersion: BigInt(current.version),
        referenceVersion: BigInt(reference.version),
        backend: current.model.backend,
        configJson: current.model.configJson,
      }));
    },
  };
}
