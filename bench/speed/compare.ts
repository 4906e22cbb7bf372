/**
 * How the speed benchmark tells that rlaif and PyTorch computed the same thing, so a time ratio
 * never compares different work: a tensor's error relative to its scale (max |Δ| / max |ref|,
 * the only meaningful per-tensor figure in float32: entries far below the scale cannot be
 * accurate relative to themselves), a scalar's plain relative error, and the largest absolute
 * difference of two ragged lists (log-probs, in nats).
 */

/** max_i |ours_i − ref_i| / max_i |ref_i|; throws when the lengths differ (different work). */
export function relativeToScale(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (ours.length !== ref.length) throw new Error(`compared ${ours.length} values with ${ref.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs((ours[i] as number) - (ref[i] as number)));
    scale = Math.max(scale, Math.abs(ref[i] as number));
  }
  return diff / Math.max(scale, Number.MIN_VALUE);
}

/** |ours − ref| / |ref| (|ref| floored at 1e-12). */
export function relative(ours: number, ref: number): number {
  return Math.abs(ours - ref) / Math.max(Math.abs(ref), 1e-12);
}

/** max |a[i][j] − b[i][j]| over rows that must have the same lengths. */
export function maxAbsDiff(a: readonly (readonly number[])[], b: readonly (readonly number[])[]): number {
  if (a.length !== b.length) throw new Error(`compared ${a.length} rows with ${b.length}`);
  let worst = 0;
  a.forEach((row, i) => {
    const other = b[i] as readonly number[];
    if (row.length !== other.length) throw new Error(`row ${i}: ${row.length} values vs ${other.length}`);
    row.forEach((x, j) => {
      worst = Math.max(worst, Math.abs(x - (other[j] as number)));
    });
  });
  return worst;
}
