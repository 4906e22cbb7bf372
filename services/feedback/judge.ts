/**
 * LLM-as-judge over any OpenAI-compatible endpoint (`/v1/completions` or `/v1/chat/completions`:
 * OpenAI, vLLM, llama.cpp's server, or another rlaif Policy's `--openai-port`). A rubric prompt
 * with `{prompt}` and `{completion}` placeholders is sent per item, and a score is parsed from the
 * answer by a fixed rule ({@link parseScore}); pairwise mode ({@link Judge.compare}) asks which of
 * two completions is better, for labelling preferences.
 *
 * Why every item gets a status: a judge that answers off-format, times out or is rate-limited
 * must not turn into a reward of 0 (a silent, wrong learning signal). Such an item comes back as
 * `{ status: "error", reason }` and the caller excludes it.
 *
 * Calls: plain `fetch` (no SDK at run time), each attempt under its own deadline
 * (`AbortSignal.timeout`); 429 and 5xx answers are retried with exponential backoff and full
 * jitter (a Retry-After header, capped, is honoured); other failures (4xx, a timeout, a refused
 * connection) are reported at once, since repeating them would only add latency.
 *
 * Served as a FeedbackService scorer by judge-scorer.ts (`rlaif serve feedback --judge-url …`).
 */
import { readFileSync } from "node:fs";
import { fullJitterMs } from "../core/src/backoff.js";
import { ConfigError } from "../core/src/errors.js";
import { sha256Hex } from "../core/src/hash.js";

/** A judged item: the reward the rubric gave, or why there is none. Never a made-up 0. */
export type JudgeResult =
  | { status: "ok"; reward: number; rationale: string }
  | { status: "error"; reason: string };

/** A pairwise verdict: which completion the judge prefers, or why there is none. */
export type PairwiseResult =
  | { status: "ok"; preferred: "A" | "B"; rationale: string }
  | { status: "error"; reason: string };

/** Default pairwise rubric (placeholders `{prompt}`, `{a}`, `{b}`). */
export const DEFAULT_PAIRWISE_RUBRIC =
  "Which response continues the prompt better?\nPrompt: {prompt}\nResponse A: {a}\nResponse B: {b}\nAnswer with 'Preferred: A' or 'Preferred: B'.\n";

/** Options of a {@link Judge}. */
export interface JudgeOptions {
  /** The API's base URL including `/v1`, e.g. `http://127.0.0.1:8000/v1`. */
  baseUrl: string;
  model: string;
  /** Bearer token; see {@link resolveJudgeApiKey} for taking it from an env var or a file. */
  apiKey?: string;
  /** Which endpoint: `completions` sends the filled rubric as the prompt, `chat` as one user message. */
  mode: "completions" | "chat";
  /** Rubric with `{prompt}` and `{completion}`; it should ask for a line `Score: <number>`. */
  rubric: string;
  /** Pairwise rubric with `{prompt}`, `{a}` and `{b}` (default {@link DEFAULT_PAIRWISE_RUBRIC}). */
  pairwiseRubric?: string;
  /** Inclusive range a score must lie in (default [0, 10]); one outside it is an error. */
  scoreRange?: readonly [number, number];
  /** Tokens the judge may answer with (default 64). */
  maxTokens?: number;
  /** Sampling temperature of the judge (default 0: the same answer for the same item, where the server is deterministic). */
  temperature?: number;
  /** Deadline of each attempt in ms (default 30 000). */
  timeoutMs?: number;
  /** Retries after a 429 or 5xx answer (default 3). */
  retries?: number;
  /** First backoff in ms, doubled per retry, full jitter (default 250); capped at `maxBackoffMs` (default 5 000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Items asked at once by `score` and `compare` (default 4). */
  concurrency?: number;
}

/**
 * The API key: the environment variable named `apiKeyEnv`, else the first line of `apiKeyFile`
 * (a mounted secret), else none. ConfigError naming the source when the one asked for is empty
 * or unreadable, so a missing secret fails at start-up rather than as 401s on every item.
 */
export function resolveJudgeApiKey(
  from: { apiKeyEnv?: string; apiKeyFile?: string },
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (from.apiKeyEnv) {
    const key = env[from.apiKeyEnv];
    if (!key) throw new ConfigError(`judge API key: environment variable ${from.apiKeyEnv} is not set`);
    return key;
  }
  if (from.apiKeyFile) {
    let text: string;
    try {
      text = readFileSync(from.apiKeyFile, "utf8");
    } catch (err) {
      throw new ConfigError(`judge API key file ${from.apiKeyFile}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const key = text.split(/\r?\n/)[0]?.trim() ?? "";
    if (!key) throw new ConfigError(`judge API key file ${from.apiKeyFile}: holds no key`);
    return key;
  }
  return undefined;
}

/** The start of an answer, for reasons (an unparseable answer may be long). */
function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return JSON.stringify(flat.length > 80 ? `${flat.slice(0, 80)}…` : flat);
}

const NUMBER = String.raw`[-+]?\d+(?:\.\d+)?`;
const SCORE_MARK = new RegExp(
  String.raw`score\W{0,3}?\s*(?:[:=]|is)\s*\**\s*(${NUMBER})(?:\s*/\s*(${NUMBER}))?`,
  "i",
);
const BARE = new RegExp(String.raw`^\**(${NUMBER})(?:\s*/\s*(${NUMBER}))?\**\.?$`);

/**
 * The score in a judge's answer, by this rule: the first `Score: N` (case-insensitive; `:`, `=`
 * or `is`; Markdown `**` allowed; `N/M` allowed when M is the range's top), else an answer that is
 * only a number. N must lie in `range`. Anything else is an error whose reason quotes the answer.
 * Why not "the first number anywhere": a rationale mentions numbers ("2 of the 3 sentences"), and
 * a number picked from prose is a confident wrong reward.
 */
export function parseScore(
  answer: string,
  range: readonly [number, number] = [0, 10],
): { score: number } | { reason: string } {
  const m = SCORE_MARK.exec(answer) ?? BARE.exec(answer.trim());
  if (!m) {
    return {
      reason: `no score in the judge's answer: expected "Score: <number>" or a bare number in [${range[0]}, ${range[1]}], got ${excerpt(answer)}`,
    };
  }
  const score = Number(m[1]);
  if (m[2] !== undefined && Number(m[2]) !== range[1]) {
    return { reason: `the judge scored out of ${m[2]}, the rubric's range is [${range[0]}, ${range[1]}]` };
  }
  if (score < range[0] || score > range[1]) {
    return { reason: `the judge's score ${score} is outside [${range[0]}, ${range[1]}]` };
  }
  return { score };
}

const PREFER_MARK =
  /\b(?:preferred|winner|better|answer|choice|verdict)\b\W{0,3}?\s*[:=]?\s*\**\s*(?:response\s+)?\(?([AB])\b/i;
const PREFER_BARE = /^\**\s*(?:response\s+)?\(?([AB])\)?\**\.?$/i;

/**
 * Which completion a pairwise answer prefers: the first `Preferred: A|B` (also `Winner:`,
 * `Better:`, `Answer:`, `Choice:`, `Verdict:`, any case; `Response B`, `(B)` and `**B**` allowed;
 * the letter itself upper-case), else an answer that is only `A` or `B`; anything else is an
 * error quoting the answer.
 */
export function parsePreference(answer: string): { preferred: "A" | "B" } | { reason: string } {
  const m = PREFER_MARK.exec(answer) ?? PREFER_BARE.exec(answer.trim());
  // the keywords are case-insensitive, the letter is not ("verdict: a tie" names no response)
  if (!m || !/^[AB]$/.test(m[1] as string))
    return {
      reason: `no preference in the judge's answer: expected "Preferred: A" or "Preferred: B", got ${excerpt(answer)}`,
    };
  return { preferred: m[1] as "A" | "B" };
}

/** Replaces every `{name}` of `vars` in `template` (values are inserted as they are, `$` included). */
function fill(template: string, vars: Readonly<Record<string, string>>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => vars[name] ?? whole);
}

function requirePlaceholders(template: string, names: readonly string[], what: string): void {
  const missing = names.filter((n) => !template.includes(`{${n}}`));
  if (missing.length)
    throw new ConfigError(`${what} lacks the placeholder(s) ${missing.map((n) => `{${n}}`).join(", ")}`);
}

/** Runs `work` over `items` with at most `limit` at once, results in order. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await work(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/** A judge over one endpoint, model and rubric (see the module doc). */
export class Judge {
  /** What identifies this judge's scores (provenance): model, mode and a hash of the rubrics. */
  readonly provenance: { model: string; mode: string; rubricSha256: string };
  private readonly range: readonly [number, number];
  private readonly pairwise: string;

  constructor(private readonly opts: JudgeOptions) {
    requirePlaceholders(opts.rubric, ["prompt", "completion"], "judge rubric");
    this.pairwise = opts.pairwiseRubric ?? DEFAULT_PAIRWISE_RUBRIC;
    requirePlaceholders(this.pairwise, ["prompt", "a", "b"], "judge pairwise rubric");
    this.range = opts.scoreRange ?? [0, 10];
    if (!(this.range[0] < this.range[1])) throw new ConfigError(`judge score range [${this.range}] is empty`);
    try {
      new URL(opts.baseUrl);
    } catch {
      throw new ConfigError(
        `judge base URL ${JSON.stringify(opts.baseUrl)} is not a URL (e.g. http://127.0.0.1:8000/v1)`,
      );
    }
    const rubrics = new TextEncoder().encode(`${opts.rubric}\u0000${this.pairwise}`);
    this.provenance = { model: opts.model, mode: opts.mode, rubricSha256: sha256Hex(rubrics) };
  }

  /**
   * Scores each `{prompt, completion}`; one result per item, in order. `signal` (e.g. the deadline
   * of the Score call being answered) stops the remaining attempts: their items are errors.
   */
  score(
    items: ReadonlyArray<{ prompt: string; completion: string }>,
    signal?: AbortSignal,
  ): Promise<JudgeResult[]> {
    return mapLimited(items, this.opts.concurrency ?? 4, async (item): Promise<JudgeResult> => {
      const answer = await this.ask(fill(this.opts.rubric, item), signal);
      if ("reason" in answer) return { status: "error", reason: answer.reason };
      const parsed = parseScore(answer.text, this.range);
      if ("reason" in parsed) return { status: "error", reason: parsed.reason };
      return { status: "ok", reward: parsed.score, rationale: answer.text.trim() };
    });
  }

  /** Asks which of two completions of each prompt is better (`a` is shown as A, `b` as B); `signal` as in `score`. */
  compare(
    items: ReadonlyArray<{ prompt: string; a: string; b: string }>,
    signal?: AbortSignal,
  ): Promise<PairwiseResult[]> {
    return mapLimited(items, this.opts.concurrency ?? 4, async (item): Promise<PairwiseResult> => {
      const answer = await this.ask(fill(this.pairwise, item), signal);
      if ("reason" in answer) return { status: "error", reason: answer.reason };
      const parsed = parsePreference(answer.text);
      if ("reason" in parsed) return { status: "error", reason: parsed.reason };
      return { status: "ok", preferred: parsed.preferred, rationale: answer.text.trim() };
    });
  }

  /** The judge's answer to one filled rubric, or why there is none (after the retries). */
  private async ask(text: string, signal?: AbortSignal): Promise<{ text: string } | { reason: string }> {
    const o = this.opts;
    const chat = o.mode === "chat";
    const url = `${o.baseUrl.replace(/\/+$/, "")}/${chat ? "chat/completions" : "completions"}`;
    const body = JSON.stringify({
      model: o.model,
      ...(chat ? { messages: [{ role: "user", content: text }] } : { prompt: text }),
      max_tokens: o.maxTokens ?? 64,
      temperature: o.temperature ?? 0,
    });
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;
    const timeoutMs = o.timeoutMs ?? 30_000;
    const retries = o.retries ?? 3;
    const cancelled = { reason: `judge ${url}: cancelled by the caller` };
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) return cancelled;
      const deadline = AbortSignal.timeout(timeoutMs);
      let res: Response;
      let raw: string;
      try {
        const both = signal ? AbortSignal.any([signal, deadline]) : deadline;
        res = await fetch(url, { method: "POST", headers, body, signal: both });
        raw = await res.text();
      } catch (err) {
        const e = err as Error;
        if (signal?.aborted) return cancelled;
        if (e.name === "TimeoutError") return { reason: `judge ${url}: no answer within ${timeoutMs} ms` };
        return { reason: `judge ${url}: ${e.message}${e.cause ? ` (${(e.cause as Error).message})` : ""}` };
      }
      if (res.ok) return answerText(raw, chat, url);
      const why = `judge ${url}: HTTP ${res.status}${errorMessage(raw)}`;
      if ((res.status !== 429 && res.status < 500) || attempt >= retries) {
        return { reason: attempt > 0 ? `${why} (after ${attempt + 1} attempts)` : why };
      }
      await new Promise((r) => setTimeout(r, this.backoff(attempt, res.headers.get("retry-after"))));
    }
  }

  /** Full jitter: uniform in [0, min(cap, base·2^attempt)]; a Retry-After (seconds) raises the floor, capped. */
  private backoff(attempt: number, retryAfter: string | null): number {
    const cap = this.opts.maxBackoffMs ?? 5000;
    const jitter = fullJitterMs(attempt + 1, this.opts.backoffMs ?? 250, cap);
    const asked = retryAfter !== null && /^\d+(\.\d+)?$/.test(retryAfter) ? Number(retryAfter) * 1000 : 0;
    return Math.min(cap, Math.max(jitter, asked));
  }
}

/** `: <message>` of an OpenAI error body, or of any short body, for reasons. */
function errorMessage(raw: string): string {
  try {
    const m = (JSON.parse(raw) as { error?: { message?: unknown } }).error?.message;
    if (typeof m === "string") return `: ${m}`;
  } catch {
    // not JSON: quote a little of it
  }
  return raw ? `: ${excerpt(raw)}` : "";
}

/** The first choice's text of a completions or chat answer, or why it has none. */
function answerText(raw: string, chat: boolean, url: string): { text: string } | { reason: string } {
  let choice: { text?: unknown; message?: { content?: unknown } } | undefined;
  try {
    choice = (JSON.parse(raw) as { choices?: (typeof choice)[] }).choices?.[0];
  } catch {
    return { reason: `judge ${url}: the answer is not JSON: ${excerpt(raw)}` };
  }
  const text = chat ? choice?.message?.content : choice?.text;
  if (typeof text !== "string") {
    return {
      reason: `judge ${url}: the answer has no ${chat ? "choices[0].message.content" : "choices[0].text"}`,
    };
  }
  return { text };
}
