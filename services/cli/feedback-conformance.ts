/**
 * The conformance suite of docs/feedback-contract.md (`rlaif feedback-check`): calls that anyone
 * can run against their FeedbackService to learn, row by row, where it departs from the contract
 * before a training run finds out. Response rules are the shared ones of core/src/grpc/rules.ts
 * (`scoreResponseRules`, the same the Rollout applies), so the suite and the Rollout cannot
 * disagree about what a valid answer is.
 */
import { type ServiceError, status } from "@grpc/grpc-js";
import {
  type FeedbackService,
  type GetInfoResponse,
  type ScoreResponse,
  ScoreStatus,
} from "../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ValidationError } from "../core/src/errors.js";
import type { Client } from "../core/src/grpc/client.js";
import {
  isOkScore,
  MAX_SCORE_ITEMS,
  MAX_SCORED_TEXT_BYTES,
  scoreResponseRules,
  tokenRewardMismatch,
} from "../core/src/grpc/rules.js";
import { validate } from "../core/src/grpc/validation.js";

/** One row of the suite's table. */
export interface CheckRow {
  name: string;
  pass: boolean;
  reason: string;
}

/** Items of the shape check: ASCII, multi-byte text and an empty completion. */
const ITEMS = [
  { prompt: "The movie was", completion: " good and kind.", idempotencyKey: "" },
  { prompt: "Der Film war", completion: " schön – sehr ✓", idempotencyKey: "" },
  { prompt: "Nothing", completion: "", idempotencyKey: "" },
];

/** The gRPC code of a failed call, or undefined when it did not fail with one. */
function codeOf(err: unknown): number | undefined {
  const c = (err as Partial<ServiceError>)?.code;
  return typeof c === "number" ? c : undefined;
}

/** A call's failure as a reason: its gRPC code name and message. */
function failure(err: unknown): string {
  const c = codeOf(err);
  const name = c === undefined ? "error" : (status[c] ?? String(c));
  return `${name}: ${err instanceof Error ? err.message : String(err)}`;
}

/** Why `res` breaks the response rules for `sent` (shared rules, then the per-token length rule); "" = none. */
function responseProblem(res: ScoreResponse, sent: readonly { completion: string }[]): string {
  try {
    validate(scoreResponseRules(sent.length), res);
  } catch (err) {
    if (err instanceof ValidationError) return err.message;
    throw err;
  }
  const bad = tokenRewardMismatch(
    res.scores,
    sent.map((x) => x.completion),
  );
  return bad ? `${bad.field}: ${bad.reason}` : "";
}

/** Whether a call was refused with INVALID_ARGUMENT, as a row. */
async function refused(name: string, call: () => Promise<unknown>): Promise<CheckRow> {
  try {
    await call();
    return { name, pass: false, reason: "answered; the contract asks for INVALID_ARGUMENT" };
  } catch (err) {
    const pass = codeOf(err) === status.INVALID_ARGUMENT;
    return { name, pass, reason: pass ? "INVALID_ARGUMENT" : `${failure(err)} (expected INVALID_ARGUMENT)` };
  }
}

/** Runs every check against `client`; each call has `timeoutMs` as its deadline. */
export async function runFeedbackChecks(
  client: Client<typeof FeedbackService>,
  timeoutMs: number,
): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  const opts = { timeoutMs };
  let info: GetInfoResponse | undefined;
  try {
    info = await client.getInfo({}, opts);
    const r = info.rewardRange;
    const bad = !info.scorerId
      ? "scorer_id is empty"
      : r && !(Number.isFinite(r.min) && Number.isFinite(r.max) && r.min <= r.max)
        ? `reward_range [${r.min}, ${r.max}] is not a finite range`
        : "";
    rows.push({
      name: "getinfo",
      pass: !bad,
      reason: bad || `scorer ${info.scorerId} v${info.scorerVersion}`,
    });
  } catch (err) {
    rows.push({ name: "getinfo", pass: false, reason: failure(err) });
  }
  let res: ScoreResponse | undefined;
  try {
    res = await client.score({ items: ITEMS }, opts);
    const bad = responseProblem(res, ITEMS);
    rows.push({
      name: "score-shape",
      pass: !bad,
      reason: bad || `${res.scores.length} scores for ${ITEMS.length} items, statuses known, rewards finite`,
    });
  } catch (err) {
    rows.push({ name: "score-shape", pass: false, reason: failure(err) });
  }
  if (res && info?.rewardRange && info.rewardRange.min < info.rewardRange.max) {
    const { min, max } = info.rewardRange;
    const out = res.scores.findIndex((s) => isOkScore(s) && !(s.reward >= min && s.reward <= max));
    rows.push({
      name: "reward-range",
      pass: out < 0,
      reason:
        out < 0
          ? `OK rewards within [${min}, ${max}]`
          : `scores[${out}].reward ${res.scores[out]?.reward} outside [${min}, ${max}]`,
    });
  }
  if (res) {
    rows.push({
      name: "provenance",
      pass: res.scorerId !== "",
      reason: res.scorerId ? `scorer_id ${res.scorerId}` : "ScoreResponse.scorer_id is empty",
    });
  }
  rows.push(await idempotency(client, opts));
  rows.push(await refused("empty-items", () => client.score({ items: [] }, opts)));
  rows.push(
    await refused("oversize-text", () =>
      client.score({ items: [{ prompt: "p", completion: "x".repeat(MAX_SCORED_TEXT_BYTES + 1) }] }, opts),
    ),
  );
  const limit = Math.min(info?.maxBatchItems || MAX_SCORE_ITEMS, MAX_SCORE_ITEMS);
  rows.push(
    await refused(`batch-limit (${limit + 1} items)`, () =>
      client.score(
        { items: Array.from({ length: limit + 1 }, (_, i) => ({ prompt: "p", completion: `c${i}` })) },
        opts,
      ),
    ),
  );
  rows.push(await deadline(client, timeoutMs));
  return rows;
}

/** Same key, same text → same score; same key, other text → INVALID_ARGUMENT naming the key. */
async function idempotency(
  client: Client<typeof FeedbackService>,
  opts: { timeoutMs: number },
): Promise<CheckRow> {
  const name = "idempotency";
  const key = `feedback-check-${process.pid}-${Date.now()}`;
  const item = { prompt: "Retry", completion: " the same text", idempotencyKey: key };
  try {
    const a = (await client.score({ items: [item] }, opts)).scores[0];
    const b = (await client.score({ items: [item] }, opts)).scores[0];
    if (!a || !b) return { name, pass: false, reason: "no score for the item" };
    if (a.status === ScoreStatus.OK && (b.status !== a.status || !Object.is(a.reward, b.reward))) {
      return { name, pass: false, reason: `the same key answered ${a.reward}, then ${b.reward}` };
    }
  } catch (err) {
    return { name, pass: false, reason: failure(err) };
  }
  const reuse = await refused(name, () =>
    client.score({ items: [{ ...item, completion: " another text" }] }, opts),
  );
  return reuse.pass
    ? { name, pass: true, reason: "same key → same score; reused for other text → INVALID_ARGUMENT" }
    : { name, pass: false, reason: `key reused for other text: ${reuse.reason}` };
}

/** Calls the deadline row abandons, and the deadline they are abandoned at. */
const ABANDONED_CALLS = 4;
const ABANDON_AFTER_MS = 20;

/**
 * Calls abandoned at their deadline do not wedge the service. A caller gives up on a slow answer
 * with DEADLINE_EXCEEDED and calls again (the Rollout's retry does exactly that), so a scorer that
 * goes on working through abandoned calls one at a time — instead of dropping them when the call
 * is cancelled — answers the retry late or not at all, and a single slow moment becomes a hung
 * step. Checked as a caller sees it: {@link ABANDONED_CALLS} calls abandoned at
 * {@link ABANDON_AFTER_MS} ms, then one ordinary call, which must answer within `timeoutMs`.
 */
async function deadline(client: Client<typeof FeedbackService>, timeoutMs: number): Promise<CheckRow> {
  const name = "deadline";
  const abandoned = Array.from({ length: ABANDONED_CALLS }, () =>
    client.score({ items: ITEMS }, { timeoutMs: ABANDON_AFTER_MS }).then(
      () => undefined,
      (err: unknown) => err,
    ),
  );
  for (const err of await Promise.all(abandoned)) {
    if (err !== undefined && codeOf(err) !== status.DEADLINE_EXCEEDED) {
      return { name, pass: false, reason: `a call under a ${ABANDON_AFTER_MS} ms deadline: ${failure(err)}` };
    }
  }
  const start = Date.now();
  try {
    await client.score({ items: ITEMS }, { timeoutMs });
  } catch (err) {
    return {
      name,
      pass: false,
      reason: `after ${ABANDONED_CALLS} calls abandoned at ${ABANDON_AFTER_MS} ms the next call failed: ${failure(err)}`,
    };
  }
  return {
    name,
    pass: true,
    reason: `after ${ABANDONED_CALLS} calls abandoned at ${ABANDON_AFTER_MS} ms the next answered in ${Date.now() - start} ms`,
  };
}

/** The rows as a text table. */
export function checkTable(rows: readonly CheckRow[]): string {
  const w = Math.max(...rows.map((r) => r.name.length));
  return rows.map((r) => `${r.pass ? "PASS" : "FAIL"}  ${r.name.padEnd(w)}  ${r.reason}\n`).join("");
}
