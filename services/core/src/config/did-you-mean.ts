/**
 * "Did you mean …?" for a mistyped name (a flag, a config-file key): the closest known name by
 * edit distance. Why: a typo should cost one glance at the error, not a scan of every setting.
 */

/**
 * Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
 * neighbouring characters each cost 1, so "stpes" is 1 away from "steps" (a plain Levenshtein
 * distance would say 2).
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) =>
    Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const row = d[i] as number[];
      const up = d[i - 1] as number[];
      let best = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, ((d[i - 2] as number[])[j - 2] as number) + 1);
      }
      row[j] = best;
    }
  }
  return (d[rows - 1] as number[])[cols - 1] as number;
}

/**
 * The known names closest to `name` (case-insensitive), best first: those within an edit
 * distance of about a third of the name's length (at least 1, at most 3), so a real typo finds
 * its name and an unrelated word finds nothing. Ties keep the order of `known`.
 */
export function closestNames(name: string, known: Iterable<string>, max = 3): string[] {
  const target = name.toLowerCase();
  const limit = Math.min(3, Math.max(1, Math.floor(target.length / 3)));
  const scored: { name: string; distance: number; index: number }[] = [];
  let index = 0;
  for (const candidate of known) {
    const distance = editDistance(target, candidate.toLowerCase());
    if (distance <= limit) scored.push({ name: candidate, distance, index });
    index++;
  }
  scored.sort((x, y) => x.distance - y.distance || x.index - y.index);
  const best = scored[0]?.distance;
  return scored
    .filter((s) => s.distance === best)
    .slice(0, max)
    .map((s) => s.name);
}

/**
 * The hint to append to an "unknown name" message: ` (did you mean "steps"?)`, ` (did you mean
 * "a" or "b"?)`, or "" when nothing is close. `quote` formats each name (e.g. as `--steps`).
 */
export function didYouMean(
  name: string,
  known: Iterable<string>,
  quote: (name: string) => string = (n) => `"${n}"`,
): string {
  const names = closestNames(name, known).map(quote);
  if (names.length === 0) return "";
  const list = names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
  return ` (did you mean ${list}?)`;
}
