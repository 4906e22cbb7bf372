/**
 * BOS, EOS and padding ids of a Hugging Face model directory, from `tokenizer_config.json` and
 * `generation_config.json`, checked against the vocabulary.
 *
 * Rules (why): a row starts with BOS only where the model's own tokenizer puts one, so the
 * model reads prompts as it was trained on them —
 * - `add_bos_token: true` → the config's `bos_token` (Llama-2, TinyLlama);
 * - `add_bos_token: false`, or `bos_token: null` → none (Qwen2);
 * - not said → the special token tokenizer.json's post_processor puts first (TemplateProcessing),
 *   else none (GPT-2: its generation_config names a `bos_token_id`, but its tokenizer never adds
 *   it, so neither do we).
 * EOS: every id of generation_config's `eos_token_id` (one id or a list; generation stops at any)
 * followed by tokenizer_config's `eos_token` when it is not among them. Pad: `pad_token`, else
 * generation_config's `pad_token_id`, else the first EOS (padding is masked, any id serves).
 */
import { TokenizerError } from "../errors.js";

/** The special ids a model directory declares. */
export interface SpecialIds {
  bos: number | null;
  eos: number[];
  pad: number;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** The parsed configs (tokenizer.json too, for its post_processor). */
interface Files {
  tokenizer: unknown;
  tokenizerConfig?: unknown;
  generationConfig?: unknown;
}

/**
 * Resolves BOS/EOS/pad (see the module doc). `idOf` maps a token string to its id; every id must
 * be below `vocabSize`. Throws TokenizerError naming the file and field.
 */
export function resolveSpecials(
  files: Files,
  idOf: (token: string) => number | undefined,
  vocabSize: number,
): SpecialIds {
  const tc = isObject(files.tokenizerConfig) ? files.tokenizerConfig : {};
  const gc = isObject(files.generationConfig) ? files.generationConfig : {};
  const fail = (field: string, reason: string): never => {
    throw new TokenizerError(`${field} ${reason}`);
  };
  /** A tokenizer_config token field (a string or an AddedToken object) as an id; null if unset. */
  const tokenId = (key: string): number | null => {
    const v = tc[key];
    if (v === undefined || v === null) return null;
    const content = typeof v === "string" ? v : isObject(v) ? v.content : undefined;
    if (typeof content !== "string")
      return fail(`tokenizer_config.json: ${key}`, "must be a string or {content}");
    const id = idOf(content);
    if (id === undefined)
      return fail(`tokenizer_config.json: ${key}`, `${JSON.stringify(content)} is not in the vocabulary`);
    return id;
  };
  /** A generation_config id field as a list (one id or several); [] if unset. */
  const ids = (key: string): number[] => {
    const v = gc[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    list.forEach((id, i) => {
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= vocabSize) {
        fail(
          `generation_config.json: ${key}${Array.isArray(v) ? `[${i}]` : ""}`,
          `must be a token id below ${vocabSize}, got ${JSON.stringify(id)}`,
        );
      }
    });
    return list as number[];
  };

  let bos: number | null;
  if (tc.add_bos_token === true) {
    bos = tokenId("bos_token");
    if (bos === null) fail("tokenizer_config.json: bos_token", "is missing but add_bos_token is true");
  } else if (tc.add_bos_token === false || tc.bos_token === null) {
    bos = null;
  } else {
    bos = leadingSpecial(files.tokenizer, idOf);
  }
  const eos = ids("eos_token_id");
  const eosToken = tokenId("eos_token");
  if (eosToken !== null && !eos.includes(eosToken)) eos.push(eosToken);
  const pad = tokenId("pad_token") ?? ids("pad_token_id")[0] ?? eos[0] ?? 0;
  return { bos, eos, pad };
}

/** The special token a TemplateProcessing post_processor puts before a single sequence, if any. */
function leadingSpecial(json: unknown, idOf: (token: string) => number | undefined): number | null {
  const pp = isObject(json) ? json.post_processor : undefined;
  const processors = isObject(pp) && Array.isArray(pp.processors) ? pp.processors : [pp];
  for (const p of processors) {
    if (!isObject(p) || p.type !== "TemplateProcessing" || !Array.isArray(p.single)) continue;
    const first = p.single[0];
    const special = isObject(first) && isObject(first.SpecialToken) ? first.SpecialToken.id : undefined;
    if (typeof special === "string") {
      const id = idOf(special);
      if (id === undefined) {
        throw new TokenizerError(
          `tokenizer.json: post_processor.single[0] ${JSON.stringify(special)} is not in the vocabulary`,
        );
      }
      return id;
    }
  }
  return null;
}
