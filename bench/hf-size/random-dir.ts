/**
 * The architectures the size benchmark measures, as Hugging Face `config.json` objects, and a
 * writer of a model directory with random weights in the layout transformers saves (names,
 * shapes, float32, shards above 2 GiB), so the benchmark times the real loader rather than an in-memory build: no
 * pretrained weights can be downloaded on the machines this project is measured on.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseHfConfig } from "../../services/core/src/model/hf-config.js";
import { gpt2ConfigJson } from "../../services/core/src/model/hf-gpt2-dir.js";
import { hfGpt2Name, hfParameterShapes } from "../../services/core/src/model/hf-parameters.js";
import { type TensorOut, writeSafetensors } from "../../services/core/src/model/safetensors-write.js";

/** One architecture to measure: a name for the table and its config.json. */
export interface Architecture {
  name: string;
  config: Record<string, unknown>;
}

function gpt2(nEmbd: number, nHead: number, nLayer: number, nPositions: number, vocab: number) {
  const shape = {
    vocabSize: vocab,
    contextLength: nPositions,
    dModel: nEmbd,
    nLayers: nLayer,
    nHeads: nHead,
  };
  return gpt2ConfigJson(shape, vocab - 1, [vocab - 1]);
}

interface LlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  mlp: number;
  vocab: number;
  tied: boolean;
  theta: number;
  eps: number;
  positions: number;
}

function llama(s: LlamaShape) {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_act: "silu",
    hidden_size: s.hidden,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.hidden / s.heads,
    intermediate_size: s.mlp,
    vocab_size: s.vocab,
    max_position_embeddings: s.positions,
    rms_norm_eps: s.eps,
    rope_theta: s.theta,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: s.tied,
    bos_token_id: 1,
    eos_token_id: 2,
  };
}

/** The real sizes: GPT-2 124M, SmolLM2-135M's shape and TinyLlama-1.1B's shape. */
export const REAL_ARCHITECTURES: readonly Architecture[] = [
  { name: "gpt2-124m", config: gpt2(768, 12, 12, 1024, 50257) },
  {
    name: "smollm2-135m",
    config: llama({
      ...{ hidden: 576, layers: 30, heads: 9, kvHeads: 3, mlp: 1536, vocab: 49152 },
      ...{ tied: true, theta: 1e5, eps: 1e-5, positions: 8192 },
    }),
  },
  {
    name: "tinyllama-1.1b",
    config: llama({
      ...{ hidden: 2048, layers: 22, heads: 32, kvHeads: 4, mlp: 5632, vocab: 32000 },
      ...{ tied: false, theta: 1e4, eps: 1e-5, positions: 2048 },
    }),
  },
];

/** Tiny shapes of the same three families for CI (vocabularies above the byte tokenizer's 258 ids). */
export const SMOKE_ARCHITECTURES: readonly Architecture[] = [
  { name: "gpt2-tiny", config: gpt2(16, 2, 2, 64, 300) },
  {
    name: "smollm2-tiny",
    config: llama({
      ...{ hidden: 18, layers: 2, heads: 3, kvHeads: 1, mlp: 24, vocab: 300 },
      ...{ tied: true, theta: 1e5, eps: 1e-5, positions: 64 },
    }),
  },
  {
    name: "tinyllama-tiny",
    config: llama({
      ...{ hidden: 16, layers: 2, heads: 4, kvHeads: 2, mlp: 40, vocab: 300 },
      ...{ tied: false, theta: 1e4, eps: 1e-5, positions: 64 },
    }),
  },
];

/** Parameter names (as the file spells them) and shapes of an architecture, from the project's own layout. */
export function fileShapes(arch: Architecture): Map<string, number[]> {
  const c = parseHfConfig(arch.config, `${arch.name} config.json`);
  const shapes = hfParameterShapes(c);
  if (c.kind !== "hf-gpt2") return shapes;
  return new Map([...shapes].map(([param, shape]) => [hfGpt2Name(param), shape]));
}

/** Number of parameters of an architecture (its tensors' elements; a tied head counted once). */
export function parameterCount(arch: Architecture): number {
  let n = 0;
  for (const shape of fileShapes(arch).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * Random values the way an untrained model's look: normals of std 0.02 for matrices and
 * embeddings (a seeded xorshift, Box–Muller), 1 for norm scales, 0 for biases, so activations
 * stay finite through 30 layers.
 */
function randomTensor(name: string, shape: number[], seed: number): Float32Array {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  if (shape.length === 1) {
    const isScale = /(norm|ln_\w+)\.weight$/.test(name);
    if (isScale) data.fill(1);
    return data;
  }
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  for (let i = 0; i < data.length; i += 2) {
    const r = 0.02 * Math.sqrt(-2 * Math.log(uniform()));
    const a = 2 * Math.PI * uniform();
    data[i] = r * Math.cos(a);
    if (i + 1 < data.length) data[i + 1] = r * Math.sin(a);
  }
  return data;
}

/**
 * Bytes per safetensors file: a file is written from one Buffer, and Node 20's Buffers stop at
 * 4 GiB, so a model above this is sharded (model-0000i-of-0000n.safetensors + the index
 * transformers writes), which the loader reads like any sharded hub model.
 */
const SHARD_BYTES = 2 ** 31;

/**
 * Writes `arch` as `dir/config.json` + `dir/model.safetensors` (float32, random weights), or as
 * shards with `model.safetensors.index.json` when above SHARD_BYTES. Each shard's tensors are made
 * just before it is written, so at most one shard's values are held.
 */
export async function writeRandomHfDir(
  arch: Architecture,
  dir: string,
  seed = 1,
  shardBytes = SHARD_BYTES,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "config.json"), `${JSON.stringify(arch.config, null, 2)}\n`);
  const shards: [string, number[]][][] = [[]];
  let bytes = 0;
  for (const entry of fileShapes(arch)) {
    const size = 4 * entry[1].reduce((a, b) => a * b, 1);
    if (bytes + size > shardBytes && bytes > 0) {
      shards.push([]);
      bytes = 0;
    }
    (shards.at(-1) as [string, number[]][]).push(entry);
    bytes += size;
  }
  const n = shards.length;
  const fileName = (i: number) =>
    n === 1
      ? "model.safetensors"
      : `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
  const weightMap: Record<string, string> = {};
  let t = 0;
  for (const [i, shard] of shards.entries()) {
    const tensors = new Map<string, TensorOut>();
    for (const [name, shape] of shard) {
      tensors.set(name, { shape, data: randomTensor(name, shape, seed * 7919 + t++), dtype: "F32" });
      weightMap[name] = fileName(i);
    }
    await writeSafetensors(path.join(dir, fileName(i)), tensors);
  }
  if (n > 1) {
    const index = { metadata: { total_size: 4 * parameterCount(arch) }, weight_map: weightMap };
    await writeFile(path.join(dir, "model.safetensors.index.json"), `${JSON.stringify(index, null, 2)}\n`);
  }
}
