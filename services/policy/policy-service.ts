/**
 * rlaif.policy.v1.PolicyService handlers over a PolicyReplica. Field-level rules (counts, sizes,
 * ranges) are checked by the shared gRPC layer; what depends on the model (does a prompt fit in
 * the context window?) is checked here and reported as INVALID_ARGUMENT naming the field.
 */
import type { MessageShape } from "@bufbuild/protobuf";
import type { SamplingParamsSchema } from "../core/gen/rlaif/common/v1/types_pb.js";
import { FinishReason } from "../core/gen/rlaif/common/v1/types_pb.js";
import { type PolicyService, WeightsSelector } from "../core/gen/rlaif/policy/v1/policy_pb.js";
import { ValidationError } from "../core/src/errors.js";
import type { ServiceImpl } from "../core/src/grpc/adapter.js";
import { completionText, stopBytes, stopHoldback } from "../core/src/model/sampling.js";
import { createStreamDecoder, encode } from "../core/src/model/tokenizer.js";
import { RowGate } from "./batcher.js";
import type { GenerationResult, SamplingParams } from "./loaded-model.js";
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

/** Throws INVALID_ARGUMENT unless BOS + prompt + `extra` tokens fit in the context window. */
function checkFits(field: string, tokens: number, extra: number, context: number, what: string): void {
  if (1 + tokens + extra > context) {
    throw new ValidationError(
      field,
      `${tokens} prompt tokens + ${extra} ${what} + BOS exceed the model's context of ${context} tokens`,
    );
  }
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
      const encoded = req.prompts.map(encode);
      return admitted(rowGate, encoded.length * samples, () =>
        replica.withModels(async ({ model, version }) => {
          encoded.forEach((t, i) => {
            checkFits(`prompts[${i}]`, t.length, 1, model.contextLength, "new token (at least)");
          });
          const rows = encoded.flatMap((t) => Array.from({ length: samples }, () => t));
          const results = await model.generate(rows, params, undefined, ctx.signal);
          return {
            weightsVersion: BigInt(version),
            completions: results.map((r, row) => ({
              promptIndex: Math.floor(row / samples),
              sampleIndex: row % samples,
              text: completionText(r),
              promptTokens: rows[row],
              tokens: r.tokens,
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
      const prompt = encode(req.prompt);
      // Generation runs in the replica's batch and hands each token over as it is sampled;
      // this generator sends it on. A token is held back until the next one (or the end) shows
      // whether it is the last, which carries the finish reason. Its text is held back further
      // while it could be the start of a stop sequence, and a matched stop is never sent, so the
      // pieces join to exactly Generate's text.
      const tokens: { token: number; logprob: number }[] = [];
      let wake: (() => void) | null = null;
      // Written by the generation task, read by this generator (an object, so neither side's
      // type narrowing assumes the other never writes).
      const state: { version: bigint; finished: GenerationResult | null; failure: unknown } = {
        version: 0n,
        finished: null,
        failure: null,
      };
      const notify = () => {
        wake?.();
        wake = null;
      };
      const work = admitted(rowGate, 1, () =>
        replica.withModels(async ({ model, version: v }) => {
          checkFits("prompt", prompt.length, 1, model.contextLength, "new token (at least)");
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
      const decoder = createStreamDecoder();
      const stops = stopBytes(params.stop);
      const bytes: number[] = [];
      let sent = 0;
      /** Decoded text of bytes[sent, upTo). */
      const release = (upTo: number): string => {
        let text = "";
        for (; sent < upTo; sent++) text += decoder.push(bytes[sent] as number);
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
        if (item.token < 256) bytes.push(item.token);
        const text = last
          ? release(bytes.length - Buffer.byteLength(finished.stop ?? "", "utf8")) + decoder.end()
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
      const seqs = req.sequences.map((s) => ({
        prompt: s.promptTokens.length ? [...s.promptTokens] : encode(s.prompt),
        completion: s.completionTokens.length ? [...s.completionTokens] : encode(s.completion),
      }));
      return admitted(sequenceGate, seqs.length, () =>
        replica.withModels(async (current, reference) => {
          const chosen = req.weights === WeightsSelector.REFERENCE ? reference : current;
          seqs.forEach((s, i) => {
            if (s.completion.length === 0)
              throw new ValidationError(`sequences[${i}].completion`, "must not be empty");
            checkFits(
              `sequences[${i}]`,
              s.prompt.length,
              s.completion.length,
              chosen.model.contextLength,
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
        tokenizer: "byte-level: ids 0-255 are UTF-8 bytes, 256 is BOS, 257 is EOS",
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
