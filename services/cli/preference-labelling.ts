/**
 * The labelling half of `rlaif label`: sample two completions per prompt from a policy (the
 * sampler and settings a run's Rollout uses: temperature, top-k/p, max new tokens, EOS stops),
 * have an AI labeller score both, and keep the pair as chosen/rejected by the higher score.
 * Ties and items the labeller does not score OK (ABSTAIN, ERROR) are skipped and counted, never
 * guessed. Apart from the command so tests label through exactly this code.
 */
import { create } from "@bufbuild/protobuf";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { FeedbackService, ScoreItemSchema, ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import type { RunSettings } from "../core/src/config/settings.js";
import { PeerError } from "../core/src/errors.js";
import { createClient } from "../core/src/grpc/client.js";
import type { LabellerInfo, PreferenceLabel } from "../core/src/learn/preference-labels.js";
import type { CausalLM } from "../core/src/model/causal-lm.js";
import { generate } from "../core/src/model/sampler.js";
import { completionText } from "../core/src/model/sampling.js";
import { tokenizerOf } from "../core/src/model/tokenizer.js";
import type { ItemScorer } from "../feedback/item-scorer.js";

/** One scored completion: its reward, or why there is none. */
export type LabellerScore = { ok: true; reward: number } | { ok: false; status: "abstain" | "error" };

/** Something that scores completions and says who it is (a FeedbackService, in or out of process). */
export interface Labeller {
  info(): Promise<LabellerInfo>;
  score(items: readonly { prompt: string; completion: string }[]): Promise<LabellerScore[]>;
  close(): void;
}

function verdict(status: ScoreStatus, reward: number): LabellerScore {
  if (status === ScoreStatus.OK && Number.isFinite(reward)) return { ok: true, reward };
  return { ok: false, status: status === ScoreStatus.ABSTAIN ? "abstain" : "error" };
}

/** An in-process scorer (the built-in rules) as a labeller. */
export function scorerLabeller(scorer: ItemScorer): Labeller {
  return {
    info: async () => ({
      id: scorer.info.scorerId ?? "",
      version: scorer.info.scorerVersion ?? "",
      modelHash: scorer.info.modelHash ?? "",
    }),
    score: async (items) => {
      const scores = await scorer.score(items.map((i) => create(ScoreItemSchema, i)));
      return scores.map((s) => verdict(s.status ?? ScoreStatus.UNSPECIFIED, s.reward ?? Number.NaN));
    },
    close: () => {},
  };
}

/**
 * The FeedbackService at `address` as a labeller: calls of at most its GetInfo batch limit,
 * provenance from its responses (GetInfo's until the first response).
 */
export function remoteLabeller(
  address: string,
  timeoutMs: number,
  credentials?: ChannelCredentials,
): Labeller {
  const client = createClient(FeedbackService, address, {
    defaultTimeoutMs: timeoutMs,
    ...(credentials ? { credentials } : {}),
  });
  let limit = 0;
  let who: LabellerInfo | undefined;
  const info = async (): Promise<LabellerInfo> => {
    if (!who) {
      const i = await client.getInfo({});
      limit = i.maxBatchItems > 0 ? i.maxBatchItems : 64;
      who = { id: i.scorerId, version: i.scorerVersion, modelHash: i.modelHash };
    }
    return who;
  };
  return {
    info,
    score: async (items) => {
      await info();
      const out: LabellerScore[] = [];
      for (let s = 0; s < items.length; s += limit) {
        const batch = items.slice(s, s + limit);
        const res = await client.score({
          items: batch.map((i) => ({ prompt: i.prompt, completion: i.completion })),
        });
        if (res.scores.length !== batch.length)
          throw new PeerError(
            `labeller at ${address} returned ${res.scores.length} scores for ${batch.length} items`,
          );
        who = { id: res.scorerId, version: res.scorerVersion, modelHash: res.modelHash };
        out.push(...res.scores.map((sc) => verdict(sc.status, sc.reward)));
      }
      return out;
    },
    close: () => client.close(),
  };
}

/** What labelling produced: the pairs, and how many prompts gave none and why. */
export interface LabellingResult {
  labels: PreferenceLabel[];
  ties: number;
  abstained: number;
  errors: number;
}

/**
 * Up to `pairs` labels: prompt i (cycling through `prompts`) gets two samples (sampler rows 2i
 * and 2i+1 of seed `run.seed`), both scored by `labeller`; the higher-scored one is chosen, with
 * margin = the score difference. A pair with a tie or a score that is not OK is skipped.
 */
export async function labelPairs(
  model: CausalLM,
  prompts: readonly string[],
  pairs: number,
  run: Pick<RunSettings, "maxNewTokens" | "temperature" | "topK" | "topP" | "seed">,
  labeller: Labeller,
): Promise<LabellingResult> {
  const tok = tokenizerOf(model);
  const asked = Array.from({ length: pairs }, (_, i) => prompts[i % prompts.length] as string);
  const rows = asked.flatMap((p) => [tok.encode(p), tok.encode(p)]);
  const results = await generate(model, rows, {
    maxNewTokens: run.maxNewTokens,
    temperature: run.temperature,
    topK: run.topK,
    topP: run.topP,
    seed: run.seed,
    stopAtEos: true,
  });
  const texts = results.map((g) => completionText(g, tok));
  const items = texts.map((completion, r) => ({ prompt: asked[r >> 1] as string, completion }));
  const scores = await labeller.score(items);
  const who = await labeller.info();
  const out: LabellingResult = { labels: [], ties: 0, abstained: 0, errors: 0 };
  asked.forEach((prompt, i) => {
    const [a, b] = [scores[2 * i] as LabellerScore, scores[2 * i + 1] as LabellerScore];
    if (!a.ok || !b.ok) {
      if ((!a.ok && a.status === "error") || (!b.ok && b.status === "error")) out.errors++;
      else out.abstained++;
      return;
    }
    if (a.reward === b.reward) {
      out.ties++;
      return;
    }
    const first = a.reward > b.reward;
    out.labels.push({
      prompt,
      chosen: texts[first ? 2 * i : 2 * i + 1] as string,
      rejected: texts[first ? 2 * i + 1 : 2 * i] as string,
      labeller: who,
      margin: Math.abs(a.reward - b.reward),
    });
  });
  return out;
}
