/**
 * GPT-2 (`GPT2LMHeadModel`) as a `CausalLM`: the project's Transformer (transformer.ts is GPT-2's
 * architecture: pre-LN blocks, learned positions, tanh-GELU, Conv1D's [in, out] matrices, LayerNorm
 * ε 1e-5) with the output head tied to the token embedding, so its forward, KV-cache `step`, row
 * decoder and custom gradients are the Transformer's own.
 *
 * What differs is the file: tensors are renamed from either GPT-2 naming (see
 * `classifyGpt2Tensor`), the mask buffers of the hub files are checked and dropped, and a stored
 * `lm_head.weight` must equal `wte` (a tied model's head is not a parameter of its own).
 */
import { CheckpointError } from "../errors.js";
import type { WeightMap } from "./causal-lm.js";
import type { HfGpt2Config } from "./hf-config.js";
import type { HfOrigin } from "./hf-origin.js";
import { classifyGpt2Tensor, hfGpt2Name, hfGpt2ParameterShapes } from "./hf-parameters.js";
import type { ParamSource } from "./param-model.js";
import type { Tokenizer } from "./tokenizer-types.js";
import { TransformerLM } from "./transformer.js";

/** What a model loaded from a Hugging Face directory carries besides its weights. */
export interface HfModelExtras {
  /** The directory's own tokenizer (absent: none was found, the byte tokenizer applies). */
  tokenizer?: Tokenizer;
  /** Where it was loaded from, for checkpoints and export. */
  origin?: HfOrigin;
}

/** A GPT-2 whose parameters are named `tf.Variable`s (the Transformer's names). Dispose it when done. */
export class HfGpt2LM extends TransformerLM {
  /** Model family, as written in checkpoints. */
  override readonly kind = "hf-gpt2" as const;
  /** Validated hyperparameters (the Transformer's plus GPT-2's special tokens). */
  declare readonly config: HfGpt2Config;
  /** The tokenizer of the directory it came from (see CausalLM.tokenizer). */
  readonly tokenizer?: Tokenizer;
  /** See CausalLM.origin. */
  readonly origin?: HfOrigin;

  /** From `source` as the Transformer builds it (a seed: GPT-2's initialisation), head tied. */
  constructor(config: HfGpt2Config, source: ParamSource, extras: HfModelExtras = {}) {
    super(config, source, true);
    (this as { config: HfGpt2Config }).config = config;
    if (extras.tokenizer) this.tokenizer = extras.tokenizer;
    if (extras.origin) this.origin = extras.origin;
  }
}

function isCausalMask(data: Float32Array, n: number): boolean {
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) if (data[i * n + j] !== (j <= i ? 1 : 0)) return false;
  return true;
}

/**
 * The model's weights from a GPT-2 directory's tensors (`where` names the directory in errors):
 * both namings, mask buffers dropped after checking they are the causal mask of n_positions (or
 * the scalar masked_bias), an `lm_head.weight` accepted only when equal to `wte`. Throws
 * CheckpointError naming the tensor on an unknown, missing or misshapen one.
 */
export function gpt2WeightsFromHf(c: HfGpt2Config, tensors: WeightMap, where: string): WeightMap {
  const shapes = hfGpt2ParameterShapes(c);
  const out: WeightMap = new Map();
  let head: Float32Array | null = null;
  const fail = (reason: string): never => {
    throw new CheckpointError(`${where}: ${reason}`);
  };
  for (const [name, t] of tensors) {
    const kind = classifyGpt2Tensor(name);
    if ("tiedHead" in kind) {
      head = t.data;
      continue;
    }
    if ("buffer" in kind) {
      const n = c.contextLength;
      const okBias = kind.buffer === "attn.bias" && t.data.length === n * n && isCausalMask(t.data, n);
      if (!okBias && kind.buffer === "attn.bias")
        fail(`tensor '${name}' is not the causal mask [1, 1, ${n}, ${n}] GPT-2 stores`);
      if (kind.buffer === "attn.masked_bias" && t.data.length !== 1) fail(`tensor '${name}' is not a scalar`);
      continue;
    }
    const want = shapes.get(kind.param);
    if (want === undefined) return fail(`tensor '${name}' is not a GPT-2 parameter`);
    if (out.has(kind.param)) fail(`tensor '${name}' appears in both namings`);
    if (want.join() !== t.shape.join()) fail(`tensor '${name}' is [${t.shape}], config.json says [${want}]`);
    out.set(kind.param, t);
  }
  for (const param of shapes.keys()) {
    if (!out.has(param)) fail(`tensor '${hfGpt2Name(param)}' is missing`);
  }
  if (head !== null) {
    const wte = (out.get("wte") as { data: Float32Array }).data;
    if (head.length !== wte.length || head.some((x, i) => x !== wte[i]))
      fail("tensor 'lm_head.weight' differs from wte, but GPT2LMHeadModel ties them (tie_word_embeddings)");
  }
  return out;
}

/** The weights under Hugging Face's save_pretrained names (for writing a directory back). */
export function gpt2WeightsToHf(weights: WeightMap): WeightMap {
  return new Map([...weights].map(([name, w]) => [hfGpt2Name(name), w]));
}
