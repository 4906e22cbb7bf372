/**
 * Hugging Face directories that are wrong in some way: every defect stops with an error naming
 * the file and the tensor (CheckpointError) or the config.json field (ValidationError); the
 * dtype decoders give IEEE values bit for bit; our own camelCase configs round-trip.
 */
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointError, ValidationError } from "../services/core/src/errors.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { modelParameterShapes, validateModelConfig } from "../services/core/src/model/causal-lm.js";
import { createModel } from "../services/core/src/model/checkpoint.js";
import { parseHfConfig } from "../services/core/src/model/hf-config.js";
import { loadHfModel, readHfConfig } from "../services/core/src/model/hf-model-dir.js";
import { decodeFloats, readSafetensorsDir } from "../services/core/src/model/safetensors.js";

const FIXTURES = path.join(import.meta.dirname, "fixtures", "hf");

/** A safetensors file of raw tensors (bytes as given), Hugging Face's layout. */
function writeSafetensors(
  file: string,
  tensors: Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }>,
) {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let at = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + t.bytes.length] };
    at += t.bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, ...Object.values(tensors).map((t) => Buffer.from(t.bytes))]));
}

const u16 = (...xs: number[]) => new Uint8Array(Uint16Array.from(xs).buffer);
const f32 = (...xs: number[]) => new Uint8Array(Float32Array.from(xs).buffer);

/** The rejection of `p`, for checking its class and message. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

describe("hf files", () => {
  let tmp: string;
  beforeAll(async () => {
    await initBackend("wasm");
    tmp = mkdtempSync(path.join(tmpdir(), "hf-files-"));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  /** A copy of fixture `name` in a fresh directory, to break. */
  const copy = (name: string) => {
    const dir = mkdtempSync(path.join(tmp, `${name}-`));
    cpSync(path.join(FIXTURES, name), dir, { recursive: true });
    return dir;
  };
  const editConfig = (dir: string, edit: (c: Record<string, unknown>) => void) => {
    const file = path.join(dir, "config.json");
    const c = JSON.parse(readFileSync(file, "utf8"));
    edit(c);
    writeFileSync(file, JSON.stringify(c));
  };

  it("hf files - F16 and BF16 decode to the IEEE values (subnormal, ±inf, NaN), F32 unaligned", () => {
    const half = decodeFloats(
      u16(0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x3555),
      "F16",
    );
    expect([...half.subarray(0, 7)]).toEqual([1, -2, 65504, 2 ** -24, -0, Infinity, -Infinity]);
    expect(half[7]).toBeNaN();
    expect(half[8]).toBeCloseTo(1 / 3, 3);
    expect([...decodeFloats(u16(0x3f80, 0xc020, 0x4049, 0x0000), "BF16")]).toEqual([1, -2.5, 3.140625, 0]);
    const shifted = new Uint8Array(9);
    shifted.set(f32(1.5, -7), 1);
    expect([...decodeFloats(shifted.subarray(1), "F32")]).toEqual([1.5, -7]);
  });

  it("hf files - a bad weights file names the file and the tensor", async () => {
    const dir = mkdtempSync(path.join(tmp, "bad-"));
    const file = path.join(dir, "model.safetensors");
    let e = await rejection(readSafetensorsDir(dir));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/neither model\.safetensors nor model\.safetensors\.index\.json/);
    writeSafetensors(file, { ids: { dtype: "I64", shape: [1], bytes: new Uint8Array(8) } });
    e = await rejection(readSafetensorsDir(dir));
    expect(e.message).toContain(file);
    expect(e.message).toMatch(/tensor 'ids' has dtype I64/);
    writeSafetensors(file, { w: { dtype: "F32", shape: [3], bytes: f32(1, 2) } });
    expect((await rejection(readSafetensorsDir(dir))).message).toMatch(
      /'w' spans 8 bytes, its F32 shape \[3\] needs 12/,
    );
    writeSafetensors(file, { w: { dtype: "BF16", shape: [2], bytes: u16(1, 2) } });
    writeFileSync(file, readFileSync(file).subarray(0, -1));
    expect((await rejection(readSafetensorsDir(dir))).message).toMatch(
      /'w' ends at byte \d+, past the file's/,
    );
  });

  it("hf files - a sharded index is preferred over a stale single file and must match its shards", async () => {
    const dir = copy("llama-bf16-sharded");
    writeFileSync(path.join(dir, "model.safetensors"), "stale");
    const { weights } = await readSafetensorsDir(dir);
    expect(weights.size).toBe(21);
    const indexFile = path.join(dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(indexFile, "utf8"));
    const moved = {
      ...index,
      weight_map: { ...index.weight_map, "model.norm.weight": "model-00001-of-00005.safetensors" },
    };
    writeFileSync(indexFile, JSON.stringify(moved));
    const e = await rejection(readSafetensorsDir(dir));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/tensor 'model\.norm\.weight'/);
    writeFileSync(
      indexFile,
      JSON.stringify({ weight_map: { ...index.weight_map, extra: "model-00001-of-00005.safetensors" } }),
    );
    expect((await rejection(readSafetensorsDir(dir))).message).toMatch(/lacks tensor 'extra'/);
  });

  it("hf files - unsupported config options stop with an error naming the config.json field", () => {
    const llama = JSON.parse(readFileSync(path.join(FIXTURES, "llama", "config.json"), "utf8"));
    const qwen = JSON.parse(readFileSync(path.join(FIXTURES, "qwen2", "config.json"), "utf8"));
    const gpt2 = JSON.parse(readFileSync(path.join(FIXTURES, "gpt2", "config.json"), "utf8"));
    const cases: [object, string][] = [
      [{ ...llama, model_type: "mistral" }, "model_type"],
      [{ ...llama, architectures: ["LlamaForSequenceClassification"] }, "architectures"],
      [{ ...llama, rope_scaling: { rope_type: "llama3", factor: 8 } }, "rope_scaling.rope_type"],
      [{ ...llama, rope_parameters: { rope_type: "yarn", rope_theta: 1e4 } }, "rope_parameters.rope_type"],
      [{ ...llama, hidden_act: "gelu" }, "hidden_act"],
      [{ ...llama, attention_bias: true }, "attention_bias"],
      [{ ...llama, mlp_bias: true }, "mlp_bias"],
      [{ ...llama, num_key_value_heads: 3 }, "num_key_value_heads"],
      [{ ...llama, head_dim: 5 }, "head_dim"],
      [{ ...llama, vocab_size: 0 }, "vocab_size"],
      [{ ...qwen, use_sliding_window: true }, "use_sliding_window"],
      [{ ...qwen, layer_types: ["full_attention", "sliding_attention"] }, "layer_types[1]"],
      [{ ...gpt2, activation_function: "relu" }, "activation_function"],
      [{ ...gpt2, n_inner: 100 }, "n_inner"],
      [{ ...gpt2, layer_norm_epsilon: 1e-6 }, "layer_norm_epsilon"],
      [{ ...gpt2, scale_attn_by_inverse_layer_idx: true }, "scale_attn_by_inverse_layer_idx"],
      [{ ...gpt2, eos_token_id: 50256 }, "eos_token_id"],
    ];
    for (const [config, field] of cases) {
      let error: unknown = null;
      try {
        parseHfConfig(config, "x/config.json");
      } catch (e) {
        error = e;
      }
      expect(error, field).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field, field).toBe(`x/config.json: ${field}`);
    }
    // both RoPE spellings; harmless options pass
    expect(parseHfConfig({ ...llama, rope_parameters: undefined, rope_theta: 5e5 })).toMatchObject({
      ropeTheta: 5e5,
    });
    expect(parseHfConfig({ ...llama, rope_interleaved: false, pretraining_tp: 1 })).toMatchObject({
      ropeTheta: 1e4,
    });
  });

  it("hf files - tensors that do not fit the config name the tensor", async () => {
    const tied = copy("llama");
    editConfig(tied, (c) => {
      c.tie_word_embeddings = true;
    });
    const e = await rejection(loadHfModel(tied));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/tensor 'lm_head\.weight' is not a parameter .*tie_word_embeddings/);
    const wide = copy("llama");
    editConfig(wide, (c) => {
      c.intermediate_size = 41;
    });
    expect((await rejection(loadHfModel(wide))).message).toMatch(
      /'model\.layers\.0\.mlp\.down_proj\.weight' is \[16,40\]/,
    );
    const deeper = copy("qwen2");
    editConfig(deeper, (c) => {
      c.num_hidden_layers = 3;
      c.layer_types = undefined;
    });
    expect((await rejection(loadHfModel(deeper))).message).toMatch(/'model\.layers\.2\.[a-z_.]+' is missing/);
  });

  it("hf files - GPT-2: mask buffers must be causal masks, a stored head must equal wte", async () => {
    const dir = copy("gpt2-hub");
    const file = path.join(dir, "model.safetensors");
    const raw = readFileSync(file);
    const n = Number(raw.readBigUInt64LE(0));
    const header = JSON.parse(raw.subarray(8, 8 + n).toString());
    const [begin] = header["h.1.attn.bias"].data_offsets as [number];
    raw.writeFloatLE(0, 8 + n + begin); // the mask's [0, 0] entry
    writeFileSync(file, raw);
    expect((await rejection(loadHfModel(dir))).message).toMatch(/'h\.1\.attn\.bias' is not the causal mask/);
    const headed = copy("gpt2");
    const { weights } = await readSafetensorsDir(headed);
    const wte = weights.get("transformer.wte.weight") as { shape: number[]; data: Float32Array };
    const entries = Object.fromEntries(
      [...weights].map(([k, w]) => [
        k,
        { dtype: "F32", shape: w.shape, bytes: new Uint8Array(w.data.buffer) },
      ]),
    );
    const head = Float32Array.from(wte.data);
    writeSafetensors(path.join(headed, "model.safetensors"), {
      ...entries,
      "lm_head.weight": { dtype: "F32", shape: wte.shape, bytes: new Uint8Array(head.buffer) },
    });
    const ok = await loadHfModel(headed);
    ok.model.dispose();
    head[0] = (head[0] as number) + 1;
    writeSafetensors(path.join(headed, "model.safetensors"), {
      ...entries,
      "lm_head.weight": { dtype: "F32", shape: wte.shape, bytes: new Uint8Array(head.buffer) },
    });
    expect((await rejection(loadHfModel(headed))).message).toMatch(/'lm_head\.weight' differs from wte/);
  });

  it("hf files - our camelCase configs round-trip through validateModelConfig and createModel", async () => {
    for (const name of ["gpt2", "llama-tied", "qwen2"]) {
      const config = await readHfConfig(path.join(FIXTURES, name));
      const again = validateModelConfig(config.kind, JSON.parse(JSON.stringify(config)));
      expect(again).toEqual(config);
      const model = createModel(again, 1);
      expect(model.kind).toBe(config.kind);
      expect([...model.getWeights()].map(([k, w]) => [k, w.shape])).toEqual([
        ...modelParameterShapes(config),
      ]);
      model.dispose();
    }
    expect(() => validateModelConfig("hf-llama", { kind: "hf-llama", family: "mistral" })).toThrow(
      ValidationError,
    );
    expect(() => validateModelConfig("hf-gpt2", { kind: "hf-llama" })).toThrow(/config\.kind/);
  });

  it("hf files - a config.json that is not JSON is a CheckpointError naming it", async () => {
    const dir = mkdtempSync(path.join(tmp, "nojson-"));
    copyFileSync(path.join(FIXTURES, "gpt2", "model.safetensors"), path.join(dir, "model.safetensors"));
    writeFileSync(path.join(dir, "config.json"), "{");
    const e = await rejection(loadHfModel(dir));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(path.join(dir, "config.json"));
  });
});
