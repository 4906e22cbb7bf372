/**
 * Seeded pseudo-random numbers (xoshiro128** seeded through splitmix32).
 *
 * Sampling, weight initialisation and data order must be reproducible from a seed on every
 * backend, so randomness is drawn in JS from this generator rather than from `Math.random` or
 * backend kernels. Independent streams (e.g. one per generated row, one per parameter) come from
 * the same seed plus a stream id, so one stream's consumption never shifts another's.
 */

function splitmix32(state: number): [next: number, out: number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

/** 32-bit FNV-1a of a string: turns names (e.g. parameter names) into stream ids. */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A xoshiro128** generator: small, fast, and good enough for sampling and initialisation. */
export class Rng {
  private readonly s = new Uint32Array(4);
  private spare: number | null = null;

  /**
   * `seed` may be any safe integer (both 32-bit halves are mixed in); `stream` selects an
   * independent sequence for the same seed.
   */
  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
    let state = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) | 0, 0x27d4eb2d);
    state = (state ^ Math.imul(stream >>> 0, 0x165667b1)) | 0;
    for (let i = 0; i < 4; i++) {
      const [next, out] = splitmix32(state);
      state = next;
      this.s[i] = out;
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  /** Next uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  nextInt(n: number): number {
    return Math.floor(this.nextFloat() * n);
  }

  /** Standard normal deviate (Box–Muller; the second value of each pair is kept for the next call). */
  nextNormal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.nextFloat();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** In-place Fisher–Yates shuffle. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }
}
