/**
 * A scripted CausalLM for sampler tests: at each decoding step it puts all the mass on the next
 * token of its row's script, so every seed samples the script and a stopping place is exact.
 */
import type { CausalLM } from "../../services/core/src/model/causal-lm.js";
import type { RowDecoder } from "../../services/core/src/model/row-decoder.js";
import type { Tokenizer } from "../../services/core/src/model/tokenizer-types.js";

/**
 * A model (vocabulary of `tokenizer`, else the byte tokenizer's) whose row r emits scripts[r]
 * (token ids) one token per step, whatever the prompt. One request's rows are admitted together
 * into slots 0, 1, …, so slot s starts as row s; a re-layout carries each slot's script along.
 */
export function scripted(scripts: number[][], contextLength = 64, tokenizer?: Tokenizer): CausalLM {
  const V = tokenizer?.vocabSize ?? 258;
  /** Logits [n·V] putting 60 on each slot's next script token. */
  const logits = (rows: { script: number; k: number }[]) => {
    const z = new Float32Array(rows.length * V);
    rows.forEach((row, i) => {
      z[i * V + (scripts[row.script]?.[row.k++] ?? 0)] = 60;
    });
    return z;
  };
  const model = {
    kind: "transformer",
    config: { vocabSize: V, contextLength, dModel: 8, nLayers: 1, nHeads: 1 },
    ...(tokenizer ? { tokenizer } : {}),
    decoder(capacity: number): RowDecoder {
      let slots = Array.from({ length: capacity }, (_, s) => ({ script: s, k: 0 }));
      return {
        get capacity() {
          return slots.length;
        },
        resize(size, keep) {
          const kept = keep.map((s) => slots[s] as { script: number; k: number });
          slots = [
            ...kept,
            ...Array.from({ length: size - kept.length }, (_, i) => ({ script: kept.length + i, k: 0 })),
          ];
        },
        prefillKey: () => 0,
        prefill: (_prompts, targets) =>
          logits(targets.map((t) => slots[t[0] as number] as { script: number; k: number })),
        step: () => logits(slots),
        dispose() {},
      };
    },
  };
  return model as unknown as CausalLM;
}
