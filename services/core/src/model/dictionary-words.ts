/**
 * How much of a text is made of real English words: the share of its words found in a word list
 * (Debian's `wamerican`, /usr/share/dict/american-english, 104,334 words). Why: a policy's
 * perplexity says little to a reader, while "91% of the words it writes are dictionary words" is
 * a claim anyone can check; the shipped default is held to it, and it guards RL against
 * drifting into junk that a scorer happens to like.
 */
import { readFileSync } from "node:fs";
import { ConfigError } from "../errors.js";

/** Where Debian's `wamerican` package puts its list (one word a line). */
export const WAMERICAN = "/usr/share/dict/american-english";

/** Words of a text: runs of ASCII letters, with inner apostrophes ("don't", "John's"). */
const WORD = /[A-Za-z]+(?:'[A-Za-z]+)*/g;

/**
 * A word list, one word a line, as a set holding each word and its lower-cased form (so "The" at
 * a sentence start counts). ConfigError saying what to install when the file is missing.
 */
export function loadWordList(file = WAMERICAN): ReadonlySet<string> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    throw new ConfigError(`word list ${file} cannot be read (Debian: apt-get install wamerican)`, { cause });
  }
  const words = new Set<string>();
  for (const line of text.split("\n")) {
    const w = line.trim();
    if (w) words.add(w).add(w.toLowerCase());
  }
  return words;
}

/** What `dictionaryWordShare` found. */
export interface WordShare {
  /** Words in the texts. */
  words: number;
  /** Of them, in the list (as written or lower-cased). */
  inDictionary: number;
  /** inDictionary / words (NaN for no words). */
  share: number;
  /** The most frequent words not in the list, most frequent first (at most 10). */
  unknown: string[];
}

/** The share of the words of `texts` that are in `list` (see the module doc). */
export function dictionaryWordShare(texts: readonly string[], list: ReadonlySet<string>): WordShare {
  let words = 0;
  let inDictionary = 0;
  const unknown = new Map<string, number>();
  for (const text of texts) {
    for (const w of text.match(WORD) ?? []) {
      words++;
      if (list.has(w) || list.has(w.toLowerCase())) inDictionary++;
      else unknown.set(w, (unknown.get(w) ?? 0) + 1);
    }
  }
  const top = [...unknown].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 10);
  return {
    words,
    inDictionary,
    share: words > 0 ? inDictionary / words : Number.NaN,
    unknown: top.map((u) => u[0]),
  };
}
