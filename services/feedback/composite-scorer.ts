/**
 * Built-in rule scorers combined with weights into one reward, configured by one setting
 * (`services.feedbackRules`, `--feedback-rules`), e.g.
 *
 *     afinn:1,length(5-30):0.3,repetition:0.5,keyword(good|kind):0.2,regex(\d{3,}):-0.5
 *
 * reward = Σ_i w_i · r_i over the listed rules (weights may be negative, to penalise a match).
 * Why in-process rules and not several services: the rules are pure and cost microseconds, and
 * one composite keeps one scorer id, one idempotency cache and one set of per-byte rewards.
 * Per-byte rewards: Σ_i w_i · bytes_i, where a rule that is local (the lexicon's words, keyword
 * and regex matches) puts its reward on the bytes that earned it and a global one (length,
 * repetition) on the last byte; so they still sum to the reward. If the lexicon cannot locate
 * its bytes (text that is not NFC) the composite gives none and the scalar is credited.
 *
 * The rules (r_i):
 * - `afinn`: the built-in scorer (scorer.ts): sentiment minus repetition and junk, in [−1, 1];
 * - `length(MIN-MAX)`: 0 for MIN..MAX words, else −(distance / bound) down to −1, in [−1, 0];
 * - `repetition`: −(share of degenerate repetition), in [−1, 0];
 * - `keyword(w1|w2|…)`: tanh(number of whole-word matches, case-insensitive), in [0, 1);
 * - `regex(PATTERN)`: 1 when the JavaScript regular expression (flag u) matches, else 0.
 */
import { createHash } from "node:crypto";
import { ScoreStatus } from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError } from "../core/src/errors.js";
import { MAX_SCORE_ITEMS } from "../core/src/grpc/rules.js";
import { type ItemScorer, ruleScorer } from "./item-scorer.js";
import { RULE_SCORER_VERSION, repetition, scoreCompletion, wordsOf } from "./scorer.js";

/** Scorer id of a composite (a lone `afinn:1` keeps the built-in id). */
export const COMPOSITE_SCORER_ID = "rule-composite";
/** The flag that configures it, for error messages. */
const FLAG = "--feedback-rules";

/** One rule's verdict on a text: a scalar and, for a local rule, its per-byte share. */
interface RuleResult {
  reward: number;
  /** One per UTF-8 byte summing to `reward`; null = global (the scalar goes on the last byte); [] = unknown positions. */
  bytes: number[] | null;
  note: string;
}

/** One parsed rule: its canonical text, its range and how it scores. */
interface Rule {
  name: string;
  range: [number, number];
  score(text: string): RuleResult;
}

/** One weighted entry of the setting. */
export interface WeightedRule {
  rule: Rule;
  weight: number;
}

/** `bytes` with `reward` added at the UTF-8 end of `text.slice(0, end)` (the last byte of a match). */
function creditAt(bytes: number[], text: string, end: number, reward: number): void {
  const at = Buffer.byteLength(text.slice(0, end), "utf8") - 1;
  if (at >= 0) bytes[at] = (bytes[at] as number) + reward;
}

const afinn: Rule = {
  name: "afinn",
  range: [-1, 1],
  score(text) {
    const s = scoreCompletion(text);
    return { reward: s.reward, bytes: Buffer.byteLength(text) > 0 ? s.byteRewards : null, note: s.rationale };
  },
};

const repetitionRule: Rule = {
  name: "repetition",
  range: [-1, 0],
  score(text) {
    const share = repetition(text.toLowerCase(), wordsOf(text), []);
    return { reward: -share, bytes: null, note: `repetition ${share.toFixed(2)}` };
  },
};

function lengthRule(arg: string): Rule {
  const m = /^(\d+)-(\d+)$/.exec(arg);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || !(lo >= 1 && hi >= lo)) {
    throw new ConfigError(
      `${FLAG}: length(${arg}) must be length(MIN-MAX) with 1 <= MIN <= MAX words, e.g. length(5-30)`,
    );
  }
  return {
    name: `length(${lo}-${hi})`,
    range: [-1, 0],
    score(text) {
      const n = wordsOf(text).length;
      const reward = n < lo ? -Math.min(1, (lo - n) / lo) : n > hi ? -Math.min(1, (n - hi) / hi) : 0;
      return { reward, bytes: null, note: `${n} words` };
    },
  };
}

function keywordRule(arg: string): Rule {
  const words = arg.split("|").map((w) => w.trim().toLowerCase());
  if (words.some((w) => w === "")) {
    throw new ConfigError(
      `${FLAG}: keyword(${arg}) must list words separated by "|", e.g. keyword(good|kind)`,
    );
  }
  const set = new Set(words);
  return {
    name: `keyword(${words.join("|")})`,
    range: [0, 1],
    score(text) {
      const bytes = new Array<number>(Buffer.byteLength(text, "utf8")).fill(0);
      let k = 0;
      const lower = text.toLowerCase();
      for (const m of lower.matchAll(/[\p{L}\p{N}]+(?:['-][\p{L}\p{N}]+)*/gu)) {
        if (!set.has(m[0])) continue;
        // the k-th match earns tanh(k) − tanh(k − 1), so the total is tanh(matches)
        k++;
        creditAt(bytes, text, (m.index as number) + m[0].length, Math.tanh(k) - Math.tanh(k - 1));
      }
      // lower-casing that changes the length moves the offsets: then positions are unknown
      return {
        reward: Math.tanh(k),
        bytes: lower.length === text.length ? bytes : [],
        note: `${k} keyword(s)`,
      };
    },
  };
}

function regexRule(arg: string): Rule {
  let re: RegExp;
  try {
    re = new RegExp(arg, "u");
  } catch (err) {
    throw new ConfigError(
      `${FLAG}: regex(${arg}) is not a valid regular expression: ${(err as Error).message}`,
    );
  }
  return {
    name: `regex(${arg})`,
    range: [0, 1],
    score(text) {
      const m = re.exec(text);
      if (!m) return { reward: 0, bytes: null, note: "no match" };
      const bytes = new Array<number>(Buffer.byteLength(text, "utf8")).fill(0);
      creditAt(bytes, text, m.index + Math.max(1, m[0].length), 1);
      return { reward: 1, bytes, note: "matched" };
    },
  };
}

/** The rule named `name`, with its parenthesised argument (null when none was given). */
function makeRule(name: string, arg: string | null): Rule {
  const needs = (what: string) => new ConfigError(`${FLAG}: ${name} takes ${what}`);
  switch (name) {
    case "afinn":
      if (arg !== null) throw needs("no argument");
      return afinn;
    case "repetition":
      if (arg !== null) throw needs("no argument");
      return repetitionRule;
    case "length":
      if (arg === null) throw needs("(MIN-MAX), e.g. length(5-30)");
      return lengthRule(arg);
    case "keyword":
      if (arg === null) throw needs("(word|word…), e.g. keyword(good|kind)");
      return keywordRule(arg);
    case "regex":
      if (arg === null) throw needs("(PATTERN), e.g. regex(\\d{3,})");
      return regexRule(arg);
    default:
      throw new ConfigError(
        `${FLAG}: unknown rule "${name}"; the rules are afinn, length(MIN-MAX), repetition, keyword(a|b), regex(PATTERN)`,
      );
  }
}

/**
 * Parses the setting: comma-separated `rule:weight` entries (a rule's parenthesised argument may
 * hold commas and colons; its parentheses must balance). "" means `afinn:1`, the built-in scorer.
 * Throws ConfigError saying what to fix.
 */
export function parseFeedbackRules(spec: string): WeightedRule[] {
  const out: WeightedRule[] = [];
  let i = 0;
  const src = spec.trim() === "" ? "afinn:1" : spec;
  while (i < src.length) {
    const name = /^\s*([a-z]+)/.exec(src.slice(i));
    if (!name) throw new ConfigError(`${FLAG}: expected a rule name at character ${i + 1} of "${src}"`);
    i += name[0].length;
    let arg: string | null = null;
    if (src[i] === "(") {
      let depth = 0;
      let j = i;
      for (; j < src.length; j++) {
        if (src[j] === "\\") j++;
        else if (src[j] === "(") depth++;
        else if (src[j] === ")" && --depth === 0) break;
      }
      if (j >= src.length) throw new ConfigError(`${FLAG}: unbalanced "(" after ${name[1]} in "${src}"`);
      arg = src.slice(i + 1, j);
      i = j + 1;
    }
    const weight = /^:\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*(?:,|$)/.exec(src.slice(i));
    if (!weight) {
      throw new ConfigError(
        `${FLAG}: ${name[1]} needs a weight, e.g. "${name[1]}${arg === null ? "" : `(${arg})`}:0.5"`,
      );
    }
    i += weight[0].length;
    out.push({ rule: makeRule(name[1] as string, arg), weight: Number(weight[1]) });
  }
  return out;
}

/** The canonical text of a parsed setting (what the rubric hash covers). */
function canonical(rules: readonly WeightedRule[]): string {
  return rules.map((r) => `${r.rule.name}:${r.weight}`).join(",");
}

/**
 * The ItemScorer of a `--feedback-rules` setting. A lone `afinn:1` (or "") is the built-in rule
 * scorer under its own id; any other mix is `rule-composite` with the canonical spec in its
 * description and its SHA-256 as the rubric hash (model_hash), so runs judged by different mixes
 * can be told apart. Deterministic, always OK.
 */
export function compositeScorer(spec: string): ItemScorer {
  const rules = parseFeedbackRules(spec);
  const text = canonical(rules);
  if (text === "afinn:1") return ruleScorer();
  const lo = rules.reduce((a, r) => a + r.weight * (r.weight >= 0 ? r.rule.range[0] : r.rule.range[1]), 0);
  const hi = rules.reduce((a, r) => a + r.weight * (r.weight >= 0 ? r.rule.range[1] : r.rule.range[0]), 0);
  return {
    info: {
      scorerId: COMPOSITE_SCORER_ID,
      scorerVersion: RULE_SCORER_VERSION,
      modelHash: `sha256:${createHash("sha256").update(text).digest("hex")}`,
      description: `weighted rules ${text}`,
      rewardRange: { min: lo, max: hi },
      deterministic: true,
      maxBatchItems: MAX_SCORE_ITEMS,
      tokenRewards: true,
    },
    score: (items) => items.map((item) => scoreMix(rules, item.completion)),
  };
}

/** The weighted sum of the rules' rewards and per-byte rewards on one text. */
function scoreMix(rules: readonly WeightedRule[], text: string) {
  const n = Buffer.byteLength(text, "utf8");
  let bytes: number[] | null = n > 0 ? new Array<number>(n).fill(0) : null;
  let reward = 0;
  const notes: string[] = [];
  for (const { rule, weight } of rules) {
    const r = rule.score(text);
    reward += weight * r.reward;
    notes.push(`${rule.name}×${weight}: ${r.reward.toFixed(3)} (${r.note})`);
    if (!bytes) continue;
    if (r.bytes === null) bytes[n - 1] = (bytes[n - 1] as number) + weight * r.reward;
    else if (r.bytes.length !== n) bytes = null;
    else for (let k = 0; k < n; k++) bytes[k] = (bytes[k] as number) + weight * (r.bytes[k] as number);
  }
  return {
    reward,
    tokenRewards: bytes ?? [],
    rationale: `${notes.join("; ")}; reward ${reward.toFixed(3)}`,
    status: ScoreStatus.OK,
  };
}
