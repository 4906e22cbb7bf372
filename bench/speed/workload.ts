/**
 * The batch a training run really trains on, built the way a run builds it: the run's first P
 * prompts (held-out corpus beginnings), G samples each from the policy with the run's sampling
 * settings (EOS ends a row), the rule scorer's reward and per-token rewards, the reference
 * log-probs of the same tokens, as Trajectory messages round-tripped through their wire format
 * (so log-probs are the float32 values a learner receives off the bus).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Trajectory, TrajectorySchema } from "../../services/core/gen/rlaif/common/v1/types_pb.js";
import type { RunSettings } from "../../services/core/src/config/settings.js";
import type { CausalLM } from "../../services/core/src/model/causal-lm.js";
import { heldOutPrompts } from "../../services/core/src/model/corpus.js";
import { generate, sequenceLogprobs } from "../../services/core/src/model/sampler.js";
import { completionText } from "../../services/core/src/model/sampling.js";
import { tokenizerOf } from "../../services/core/src/model/tokenizer.js";
import { scoreCompletion } from "../../services/feedback/scorer.js";
import { DEFAULT_PROMPT_COUNT } from "../../services/optimizer/main.js";
import { alignTokenRewards } from "../../services/rollout/collect.js";

/** One step's batch: P × G rows, prompt-major. */
export interface Workload {
  /** Prompt token ids of every row (no BOS), G consecutive rows per prompt. */
  prompts: number[][];
  /** The scored trajectories, in the same order. */
  trajectories: Trajectory[];
}

/** A trajectory as the PyTorch worker reads it. */
export interface PlainTrajectory {
  prompt: number[];
  completion: number[];
  behaviour: number[];
  reference: number[];
  reward: number;
  tokenRewards: number[];
  group: number;
}

/** Samples, scores and reference-scores step 1's batch of a run with `settings` on `model`. */
export async function buildWorkload(model: CausalLM, settings: RunSettings): Promise<Workload> {
  const g = settings.samplesPerPrompt;
  const texts = heldOutPrompts(DEFAULT_PROMPT_COUNT, settings.seed).slice(0, settings.promptsPerStep);
  const tok = tokenizerOf(model);
  const prompts = texts.flatMap((text) => Array.from({ length: g }, () => tok.encode(text)));
  const gen = await generate(model, prompts, {
    maxNewTokens: settings.maxNewTokens,
    temperature: settings.temperature,
    topK: settings.topK,
    topP: settings.topP,
    seed: settings.seed,
    stopAtEos: true,
  });
  const ref = sequenceLogprobs(
    model,
    prompts,
    gen.map((r) => r.tokens),
  );
  const trajectories = gen.map((r, i) => {
    const p = Math.floor(i / g);
    const text = completionText(r, tok);
    const score = scoreCompletion(text);
    const t = create(TrajectorySchema, {
      id: `speed.1.${p}.${i % g}`,
      runId: "speed",
      step: 1,
      promptIndex: p,
      sampleIndex: i % g,
      prompt: texts[p] as string,
      completion: text,
      promptTokens: prompts[i] as number[],
      completionTokens: r.tokens,
      behaviourLogprobs: r.logprobs,
      referenceLogprobs: ref[i] as number[],
      reward: score.reward,
      tokenRewards: alignTokenRewards(
        r.tokens.map((id) => tok.tokenBytes(id)),
        text,
        score.byteRewards,
      ),
      weightsVersion: 0n,
    });
    return fromBinary(TrajectorySchema, toBinary(TrajectorySchema, t));
  });
  return { prompts, trajectories };
}

/** The fields of a trajectory the PyTorch learner uses. */
export function plainTrajectory(t: Trajectory): PlainTrajectory {
  return {
    prompt: [...t.promptTokens],
    completion: [...t.completionTokens],
    behaviour: [...t.behaviourLogprobs],
    reference: [...t.referenceLogprobs],
    reward: t.reward,
    tokenRewards: [...t.tokenRewards],
    group: t.promptIndex,
  };
}
