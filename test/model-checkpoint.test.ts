import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointError, ValidationError, WeightsError } from "../services/core/src/errors.js";
import { initBackend } from "../services/core/src/model/backend.js";
import {
  checkpointFromModel,
  createModel,
  decodeCheckpoint,
  encodeCheckpoint,
  loadCheckpoint,
  modelFromCheckpoint,
  saveCheckpoint,
} from "../services/core/src/model/checkpoint.js";
import { CHECKPOINT_FORMAT } from "../services/core/src/model/checkpoint-names.js";
import { TransformerLM } from "../services/core/src/model/transformer.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";

/** Reads a checkpoint with plain json + numpy and prints {name: [shape, sum]} (safetensors' own layout rules). */
const PY_READER = `
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8 : 8 + n])
meta = header.pop("__metadata__")
out = {"config": json.loads(meta["config"])}
for name, t in header.items():
    a, b = t["data_offsets"]
    arr = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(t["shape"])
    out[name] = [list(arr.shape), float(arr.astype(np.float64).sum())]
print(json.dumps(out))
`;
const hasNumpy = requireTool(TOOLS.pythonNumpy);

const TINY = { vocabSize: 258, contextLength: 8, dModel: 8, nLayers: 1, nHeads: 2 };

/** Rewrites the JSON header of a checkpoint (keeping the data bytes). */
function withHeader(bytes: Uint8Array, edit: (h: Record<string, unknown>) => unknown): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const json = new TextEncoder().encode(JSON.stringify(edit(header) ?? header));
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - n);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + n), 8 + json.length);
  return out;
}

describe("checkpoint", () => {
  let model: TransformerLM;
  let dir: string;
  beforeAll(async () => {
    await initBackend("wasm");
    model = new TransformerLM(TINY, 5);
    dir = await mkdtemp(path.join(tmpdir(), "rlaif-ckpt-"));
  });
  afterAll(async () => {
    model.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it("checkpoint - encode/decode round-trips config, weights and metadata", () => {
    const bytes = encodeCheckpoint(checkpointFromModel(model, { step: "12", version: "3" }));
    const back = decodeCheckpoint(bytes);
    expect(back.config).toEqual(TINY);
    expect(back.kind).toBe("transformer");
    expect(back.tokenizer).toEqual({ kind: "byte", vocabSize: 258, bos: 256, eos: 257 });
    expect(back.metadata).toEqual({ step: "12", version: "3" });
    for (const [name, w] of model.getWeights()) {
      expect(back.weights.get(name)?.shape).toEqual(w.shape);
      expect(back.weights.get(name)?.data).toEqual(w.data);
    }
    const copy = modelFromCheckpoint(back);
    const x = tf.tensor2d([[256, 3, 4]], [1, 3], "int32");
    expect(tf.tidy(() => copy.forward(x).dataSync())).toEqual(tf.tidy(() => model.forward(x).dataSync()));
    x.dispose();
    copy.dispose();
  });

  it("checkpoint - a model built from weights holds exactly them; weights that do not fit are refused before any tensor exists", () => {
    const weights = model.getWeights();
    const built = createModel(TINY, weights);
    for (const [name, w] of built.getWeights()) expect(w.data).toEqual(weights.get(name)?.data);
    built.dispose();
    const before = tf.memory().numTensors;
    const short = new Map(weights);
    short.delete("lm_head.weight");
    expect(() => createModel(TINY, short)).toThrow(/missing parameter 'lm_head.weight'/);
    const wrong = new Map(weights).set("wte", { shape: [258, 4], data: new Float32Array(258 * 4) });
    expect(() => createModel(TINY, wrong)).toThrow(WeightsError);
    expect(tf.memory().numTensors).toBe(before);
  });

  it("checkpoint - layout is safetensors: LE u64 header length, padded JSON, contiguous F32 data", () => {
    const bytes = encodeCheckpoint(checkpointFromModel(model));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = view.getUint32(0, true);
    expect(view.getUint32(4, true)).toBe(0);
    expect(n % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header.__metadata__.format).toBe(CHECKPOINT_FORMAT);
    expect(JSON.parse(header.__metadata__.config)).toEqual(TINY);
    const wte = header.wte as { dtype: string; shape: number[]; data_offsets: [number, number] };
    expect(wte.dtype).toBe("F32");
    expect(wte.shape).toEqual([258, 8]);
    const [begin, end] = wte.data_offsets;
    const data = new Float32Array(bytes.slice(8 + n + begin, 8 + n + end).buffer);
    expect(data).toEqual(model.getWeights().get("wte")?.data);
    const total = Object.entries(header)
      .filter(([k]) => k !== "__metadata__")
      .reduce(
        (s, [, t]) =>
          s +
          ((t as { data_offsets: number[] }).data_offsets[1] as number) -
          ((t as { data_offsets: number[] }).data_offsets[0] as number),
        0,
      );
    expect(8 + n + total).toBe(bytes.length);
  });

  it.skipIf(!hasNumpy)("checkpoint - Python reads the file with json + numpy", async () => {
    const file = path.join(dir, "py.safetensors");
    await saveCheckpoint(file, checkpointFromModel(model, { step: "1" }));
    const run = spawnSync(PYTHON, ["-c", PY_READER, file], { encoding: "utf8" });
    expect(run.status, run.stderr).toBe(0);
    const seen = JSON.parse(run.stdout) as Record<string, [number[], number]>;
    expect(seen.config).toEqual(TINY);
    for (const [name, w] of model.getWeights()) {
      const [shape, sum] = seen[name] as [number[], number];
      expect(shape).toEqual(w.shape);
      expect(sum).toBeCloseTo(
        w.data.reduce((a, v) => a + v, 0),
        4,
      );
    }
    await rm(file);
  });

  it("checkpoint - corrupt or foreign bytes are CheckpointErrors", () => {
    const good = encodeCheckpoint(checkpointFromModel(model));
    const bad: Uint8Array[] = [
      good.subarray(0, 5),
      good.subarray(0, good.length - 4),
      Uint8Array.from([...good.subarray(0, 8), 0x7b, 0x7b, ...good.subarray(10)]),
      (() => {
        const b = good.slice();
        new DataView(b.buffer).setUint32(0, 1e9, true);
        return b;
      })(),
      withHeader(good, (h) => {
        (h.wte as { dtype: string }).dtype = "F16";
      }),
      withHeader(good, (h) => {
        (h.wte as { shape: number[] }).shape = [8, 258];
      }),
      withHeader(good, (h) => {
        (h.__metadata__ as Record<string, string>).config = "{";
      }),
      withHeader(good, (h) => {
        (h.__metadata__ as Record<string, string>).tokenizer = '{"kind":"bpe"}';
      }),
      withHeader(good, (h) => {
        delete h.__metadata__;
      }),
      withHeader(good, (h) => {
        delete h["ln_f.bias"];
      }),
    ];
    bad.forEach((bytes, i) => {
      expect(() => decodeCheckpoint(bytes), `case ${i}`).toThrow(CheckpointError);
    });
    expect(() => encodeCheckpoint({ ...checkpointFromModel(model), metadata: { config: "x" } })).toThrow(
      ValidationError,
    );
  });

  it("checkpoint - saveCheckpoint writes atomically and replaces the old file", async () => {
    const file = path.join(dir, "nested", "model.safetensors");
    await saveCheckpoint(file, checkpointFromModel(model, { version: "1" }));
    await saveCheckpoint(file, checkpointFromModel(model, { version: "2" }));
    expect((await loadCheckpoint(file)).metadata.version).toBe("2");
    expect(await readdir(path.dirname(file))).toEqual(["model.safetensors"]);
    // A failing write (the target is a non-empty directory) leaves no temp file behind.
    const blocked = path.join(dir, "blocked");
    await saveCheckpoint(path.join(blocked, "inner.safetensors"), checkpointFromModel(model));
    await expect(saveCheckpoint(blocked, checkpointFromModel(model))).rejects.toThrow(CheckpointError);
    expect((await readdir(dir)).sort()).toEqual(["blocked", "nested"]);
    // A torn file (what a non-atomic writer could leave) is rejected, never half-loaded.
    const torn = path.join(dir, "torn.safetensors");
    await writeFile(torn, (await readFile(file)).subarray(0, 200));
    await expect(loadCheckpoint(torn)).rejects.toThrow(CheckpointError);
    await expect(loadCheckpoint(path.join(dir, "missing.safetensors"))).rejects.toThrow(CheckpointError);
  });
});
