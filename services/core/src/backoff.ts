/**
 * Full-jitter exponential backoff (AWS's "Exponential Backoff and Jitter"): the pause before a
 * retry is uniform in [0, min(cap, base·2^(n−1))), so callers that failed together do not retry
 * together. One place for the Rollout's scorer retries and the LLM judge's HTTP retries.
 */

/** Pause before retry `n` (1-based), in ms. */
export function fullJitterMs(
  n: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  return random() * Math.min(capMs, baseMs * 2 ** Math.max(0, n - 1));
}
