/**
 * The one tokenizer interface that sampling, scoring, stop sequences, per-byte rewards and the
 * learner's batches work against, so a model brings its own vocabulary (the byte tokenizer of
 * tokenizer.ts, a Hugging Face tokenizer.json through tokenizer-hf.ts) without any of them
 * knowing which.
 *
 * Text is always made from token *bytes*, never from a library's decode(): bytes concatenate
 * exactly, so stop sequences are matched on them, a streamed character is released only when its
 * last byte arrives, and a scorer's per-byte rewards land on the tokens that wrote those bytes.
 */
/** Incremental decoder for streamed tokens: holds back a partial UTF-8 character until complete. */
export interface StreamDecoder {
  /** Text completed by this token (may be empty while a multi-byte character is incomplete). */
  push(id: number): string;
  /** Flushes what is left (an incomplete character becomes U+FFFD). */
  end(): string;
}

/** A vocabulary: ids to exact bytes and back, plus the special ids a model was trained with. */
export interface Tokenizer {
  /** Number of ids the tokenizer can produce (a model's embedding may have more rows). */
  readonly vocabSize: number;
  /** Id that starts every row the model reads, or null when the model has none (Qwen2). */
  readonly bos: number | null;
  /** Ids that end a generation (a model may have several); the first is the canonical one. */
  readonly eos: readonly number[];
  /** Id that right-pads training rows (its positions are masked, so any valid id serves). */
  readonly pad: number;
  /** Token ids of `text`, no specials added (callers decide where BOS goes). */
  encode(text: string): number[];
  /**
   * The exact UTF-8 bytes token `id` writes (empty for BOS/EOS and other specials the text never
   * shows; shared, so callers must not modify them). Concatenated over a sequence they are the
   * text's bytes. Throws ValidationError for an id outside the vocabulary.
   */
  tokenBytes(id: number): Uint8Array;
  /** A decoder that turns ids into text at complete UTF-8 boundaries only. */
  streamDecoder(): StreamDecoder;
  /** One line for logs and the Policy's GetInfo, e.g. "hf byte-level BPE, vocab 50257, …". */
  describe(): string;
  /**
   * The model directory whose tokenizer.json this is (Hugging Face tokenizers only), so a
   * checkpoint of the model can say where its tokenizer comes from.
   */
  readonly dir?: string;
}

/** The concatenated bytes of `ids` (what their text decodes from). */
export function tokensBytes(tok: Tokenizer, ids: readonly number[]): Uint8Array {
  const parts = ids.map((id) => tok.tokenBytes(id));
  const out = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of parts) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** Text of `ids` from their bytes; invalid UTF-8 (a sampled policy may write any) becomes U+FFFD. */
export function tokensText(tok: Tokenizer, ids: readonly number[]): string {
  return new TextDecoder("utf-8", { fatal: false }).decode(tokensBytes(tok, ids));
}

/** A StreamDecoder over `tokenBytes`: a streaming TextDecoder fed each token's bytes. */
export function bytesStreamDecoder(tokenBytes: (id: number) => Uint8Array): StreamDecoder {
  const decoder = new TextDecoder("utf-8", { fatal: false });
  return {
    push: (id) => decoder.decode(tokenBytes(id), { stream: true }),
    end: () => decoder.decode(),
  };
}
