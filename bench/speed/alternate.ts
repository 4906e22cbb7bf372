/**
 * Timing discipline of the speed benchmark: the sides of one figure (rlaif, PyTorch on 1 thread,
 * PyTorch on 2 threads) run one call each in turn, the order rotating every round, so a burst of
 * load from the shared machine hits all sides alike instead of one side's whole series; the first
 * rounds are warm-up (JIT, allocator, thread pools) and are dropped; the figure is the median.
 * Between two calls the machine may settle: OpenBLAS's idle threads keep spinning for ~0.1 s
 * after a multi-threaded call (measured: 0.1 CPU-s in the 0.3 s after one), which would be
 * charged to whichever side runs next.
 */
import { setTimeout as sleep } from "node:timers/promises";

/** One measurement of one side: returns the milliseconds it took (measured by the side itself). */
export type Timed = () => Promise<number>;

/** Rounds of a figure. */
export interface Rounds {
  /** Leading rounds whose times are dropped. */
  warmup: number;
  /** Rounds whose times are kept. */
  repeats: number;
  /** Pause before every call but the first (default 0). */
  settleMs?: number;
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of no values");
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/**
 * Runs every side `warmup + repeats` times, round by round, starting round r at side r mod n;
 * returns each side's kept times (ms) in run order.
 */
export async function alternate<K extends string>(
  sides: Record<K, Timed>,
  rounds: Rounds,
): Promise<Record<K, number[]>> {
  const names = Object.keys(sides) as K[];
  const kept = Object.fromEntries(names.map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let r = 0; r < rounds.warmup + rounds.repeats; r++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(r + i) % names.length] as K;
      if ((r > 0 || i > 0) && rounds.settleMs) await sleep(rounds.settleMs);
      const ms = await sides[name]();
      if (r >= rounds.warmup) kept[name].push(ms);
    }
  }
  return kept;
}

/** Medians of {@link alternate}'s times. */
export function medians<K extends string>(times: Record<K, number[]>): Record<K, number> {
  return Object.fromEntries(Object.entries<number[]>(times).map(([k, v]) => [k, median(v)])) as Record<
    K,
    number
  >;
}

/** Shortest of {@link alternate}'s times per side (for peaks: noise only ever adds time). */
export function best<K extends string>(times: Record<K, number[]>): Record<K, number> {
  return Object.fromEntries(Object.entries<number[]>(times).map(([k, v]) => [k, Math.min(...v)])) as Record<
    K,
    number
  >;
}
