/**
 * A tiny deterministic uniform generator for tests (mulberry32), so toy runs and random cases
 * are the same on every machine without depending on the product's own RNG.
 */

/** Deterministic uniform [0, 1) stream seeded by `seed`. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
