/**
 * Several in-process scorers (the LLM judge, a learned reward model, the weighted rules) combined
 * with weights into one reward, served as one scorer "composite" (docs/feedback-contract.md#composition).
 *
 * Why one scorer and not several services the Rollout calls: one Score call per batch, one
 * idempotency cache in front of all the parts (a retried call is answered whole from it), one
 * status per item, and one provenance that names every part — a consumer that sees scorer id
 * "composite" with a version and model hash can tell two mixes apart without knowing the parts.
 *
 * reward = Σ_i w_i · r_i over the parts. Status: an item is OK only if every part answered OK; a
 * part's ERROR makes it ERROR with that part's reason (ERROR wins over ABSTAIN, since an ERROR is
 * retried and an ABSTAIN is a verdict); otherwise a part's ABSTAIN makes it ABSTAIN. A part whose
 * `score` throws answers ERROR for every item of that call. Per-byte rewards: Σ_i w_i · bytes_i,
 * where a part without them puts its weighted scalar on the last byte (as the global rules do);
 * none when no part has any, or when one part's are not one per byte of the text.
 */
import { type ScoreItem, ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError } from "../core/src/errors.js";
import { sha256Hex } from "../core/src/hash.js";
import type { ScoreInit } from "./idempotency.js";
import type { ItemScorer } from "./item-scorer.js";

/** Scorer id of a mix of several scorers. */
export const MIXED_SCORER_ID = "composite";
/** Version of this file's combination rules (bump when the status or per-byte rule changes). */
export const MIXED_SCORER_VERSION = "1";

/** One part of a mix: a scorer and its weight (non-zero and finite; negative penalises). */
export interface WeightedScorer {
  scorer: ItemScorer;
  weight: number;
}

/** What identifies a part: its id, version, model hash and weight (what the mix's hash covers). */
function partKey(p: WeightedScorer): string {
  const i = p.scorer.info;
  return `${i.scorerId ?? ""}@${i.scorerVersion ?? ""}#${i.modelHash ?? ""}*${p.weight}`;
}

/** The weighted sum of the parts' reward ranges, or undefined when one part has none. */
function mixRange(parts: readonly WeightedScorer[]): { min: number; max: number } | undefined {
  let min = 0;
  let max = 0;
  for (const { scorer, weight } of parts) {
    const r = scorer.info.rewardRange;
    if (r?.min === undefined || r.max === undefined) return undefined;
    min += weight * (weight >= 0 ? r.min : r.max);
    max += weight * (weight >= 0 ? r.max : r.min);
  }
  return { min, max };
}

/**
 * The parts as one ItemScorer. A single part of weight 1 is returned as it is (same id and
 * provenance as when served alone). Throws ConfigError for no part or a zero or non-finite weight.
 */
export function mixedScorer(parts: readonly WeightedScorer[]): ItemScorer {
  if (parts.length === 0) throw new ConfigError("a scorer mix needs at least one scorer");
  for (const p of parts) {
    if (!Number.isFinite(p.weight) || p.weight === 0) {
      throw new ConfigError(
        `the weight of scorer ${p.scorer.info.scorerId} must be a finite non-zero number, got ${p.weight} (leave the scorer out instead of weighting it 0)`,
      );
    }
  }
  if (parts.length === 1 && parts[0]?.weight === 1) return (parts[0] as WeightedScorer).scorer;
  const keys = parts.map(partKey);
  const range = mixRange(parts);
  const limits = parts.map((p) => p.scorer.info.maxBatchItems ?? 0).filter((n) => n > 0);
  return {
    info: {
      scorerId: MIXED_SCORER_ID,
      scorerVersion: `${MIXED_SCORER_VERSION}:${parts.map((p) => `${p.scorer.info.scorerId}@${p.scorer.info.scorerVersion}`).join("+")}`,
      modelHash: `sha256:${sha256Hex(new TextEncoder().encode(keys.join("\n")))}`,
      description: `weighted scorers ${parts.map((p) => `${p.scorer.info.scorerId}×${p.weight} (${p.scorer.info.description})`).join(" + ")}`,
      ...(range ? { rewardRange: range } : {}),
      deterministic: parts.every((p) => p.scorer.info.deterministic === true),
      ...(limits.length > 0 ? { maxBatchItems: Math.min(...limits) } : {}),
      tokenRewards: parts.some((p) => p.scorer.info.tokenRewards === true),
    },
    async score(items) {
      const answers = await Promise.all(parts.map((p) => scorePart(p.scorer, items)));
      return items.map((item, k) =>
        combine(
          item,
          parts.map((p, i) => ({ weight: p.weight, id: p.scorer.info.scorerId ?? "", s: answers[i]?.[k] })),
        ),
      );
    },
  };
}

/** One part's scores of `items`; a throw, or a wrong number of scores, is an ERROR per item. */
async function scorePart(scorer: ItemScorer, items: readonly ScoreItem[]): Promise<ScoreInit[]> {
  let out: ScoreInit[];
  try {
    out = await scorer.score(items);
  } catch (err) {
    return items.map(() => ({ reward: 0, status: ScoreStatus.ERROR, error: (err as Error).message }));
  }
  if (out.length === items.length) return out;
  const error = `returned ${out.length} scores for ${items.length} items`;
  return items.map(() => ({ reward: 0, status: ScoreStatus.ERROR, error }));
}

/** One item's parts' scores combined by the status rule and the weighted sums. */
function combine(
  item: ScoreItem,
  parts: readonly { weight: number; id: string; s: ScoreInit | undefined }[],
): ScoreInit {
  const statusOf = (s: ScoreInit | undefined) =>
    s?.status === undefined || s.status === ScoreStatus.UNSPECIFIED ? ScoreStatus.OK : s.status;
  for (const want of [ScoreStatus.ERROR, ScoreStatus.ABSTAIN]) {
    const bad = parts.find((p) => statusOf(p.s) === want);
    if (!bad) continue;
    const why = bad.s?.error || bad.s?.rationale || "no reason given";
    const text = `${bad.id}: ${why}`;
    return want === ScoreStatus.ERROR
      ? { reward: 0, status: ScoreStatus.ERROR, error: text }
      : { reward: 0, status: ScoreStatus.ABSTAIN, rationale: text };
  }
  const n = Buffer.byteLength(item.completion, "utf8");
  const withBytes = parts.some((p) => (p.s?.tokenRewards?.length ?? 0) > 0);
  let bytes: number[] | null = withBytes && n > 0 ? new Array<number>(n).fill(0) : null;
  let reward = 0;
  const notes: string[] = [];
  for (const { weight, id, s } of parts) {
    const r = s?.reward ?? 0;
    reward += weight * r;
    notes.push(`${id}×${weight}: ${r.toFixed(3)}`);
    if (!bytes) continue;
    const own = s?.tokenRewards ?? [];
    if (own.length === 0) bytes[n - 1] = (bytes[n - 1] as number) + weight * r;
    else if (own.length !== n) bytes = null;
    else for (let k = 0; k < n; k++) bytes[k] = (bytes[k] as number) + weight * (own[k] as number);
  }
  return {
    reward,
    tokenRewards: bytes ?? [],
    rationale: `${notes.join("; ")}; reward ${reward.toFixed(3)}`,
    status: ScoreStatus.OK,
  };
}
