/**
 * Model checkpoints in the safetensors layout.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype: "F32", shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`
 * (space-padded to a multiple of 8), then the little-endian tensor bytes. Python's `safetensors`
 * (or `json` + `numpy.frombuffer`) reads it as is, which is why weights published to the Object
 * Store use it. The metadata carries what is needed to rebuild the model: kind, config JSON,
 * tokenizer description, plus free-form fields (step, version, …). `kind` is "transformer",
 * "gru", "lstm", "seq2seq", or "hf-gpt2" / "hf-llama" for a model brought from a Hugging Face
 * directory (its tokenizer is that directory's, named in the tokenizer description, and its
 * `origin` records the directory and the dtypes on disk for `rlaif export`);
 * `modelFromCheckpoint` builds the matching `CausalLM`. Every name besides the parameters'
 * (metadata keys, state-tensor prefixes) is in checkpoint-names.ts.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { endianness } from "node:os";
import path from "node:path";
import { CheckpointError, ValidationError } from "../errors.js";
import { sha256Hex } from "../hash.js";
import {
  type CausalLM,
  MODEL_KINDS,
  type ModelConfig,
  type ModelKind,
  modelKindOf,
  modelParameterShapes,
  validateModelConfig,
  type WeightMap,
} from "./causal-lm.js";
import {
  CHECKPOINT_FORMAT,
  CONFIG_KEY,
  FORMAT_KEY,
  isStateTensor,
  KIND_KEY,
  ORIGIN_KEY,
  RESERVED_METADATA_KEYS,
  STATE_TENSOR_PREFIXES,
  TOKENIZER_KEY,
} from "./checkpoint-names.js";
import { HfGpt2LM, type HfModelExtras } from "./hf-gpt2.js";
import { HfLlamaLM } from "./hf-llama.js";
import {
  describeHfTokenizer,
  type HfOrigin,
  type HfTokenizerDescription,
  isHfTokenizerDescription,
  tokenizerFromDescription,
} from "./hf-origin.js";
import type { ParamSource } from "./param-model.js";
import { RnnLM } from "./rnn.js";
import { encodeSafetensors } from "./safetensors-bytes.js";
import { Seq2SeqLM } from "./seq2seq.js";
import { describeTokenizer, isByteTokenizer, type TokenizerDescription } from "./tokenizer.js";
import { TransformerLM } from "./transformer.js";

const RESERVED = new Set(RESERVED_METADATA_KEYS);
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const LITTLE_ENDIAN_HOST = endianness() === "LE";

/** The tokenizer a checkpoint names: the byte tokenizer, or a Hugging Face directory's. */
export type CheckpointTokenizer = TokenizerDescription | HfTokenizerDescription;

const isHfKind = (kind: ModelKind): kind is "hf-gpt2" | "hf-llama" =>
  kind === "hf-gpt2" || kind === "hf-llama";

/** What a checkpoint holds. `metadata` is free-form (e.g. `{step: "1200", version: "3"}`). */
export interface Checkpoint {
  /** Required for the Hugging Face kinds (their directory's tokenizer); default: the byte tokenizer. */
  tokenizer?: CheckpointTokenizer;
  /** A Hugging Face model's directory and dtypes on disk (see hf-origin.ts). */
  origin?: HfOrigin;
  /** Model family; default: the one `config` describes (an RnnConfig names its own kind). */
  kind?: ModelKind;
  config: ModelConfig;
  weights: WeightMap;
  metadata: Record<string, string>;
  /** Tensors beside the parameters, each named with a {@link STATE_TENSOR_PREFIXES} prefix. */
  state?: WeightMap;
}

/** A decoded checkpoint, with the model kind and tokenizer it declares. */
export interface DecodedCheckpoint extends Checkpoint {
  kind: ModelKind;
  tokenizer: CheckpointTokenizer;
  /** The non-parameter tensors (empty for a plain weights file). */
  state: WeightMap;
}

/** Serialises a checkpoint. Throws ValidationError for reserved metadata keys or mismatched data. */
export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  const kind = c.kind ?? modelKindOf(c.config);
  const config = validateModelConfig(kind, c.config);
  for (const [k, v] of Object.entries(c.metadata)) {
    if (RESERVED.has(k)) throw new ValidationError(`metadata.${k}`, "is reserved");
    if (typeof v !== "string") throw new ValidationError(`metadata.${k}`, "must be a string");
  }
  const tokenizer = c.tokenizer ?? describeTokenizer();
  if (isHfKind(kind) !== (tokenizer.kind === "hf"))
    throw new ValidationError(
      "tokenizer",
      isHfKind(kind)
        ? `a ${kind} model needs its directory's tokenizer.json (none was loaded)`
        : `a ${kind} model reads the byte tokenizer`,
    );
  const badState = [...(c.state?.keys() ?? [])].find((n) => !isStateTensor(n));
  if (badState)
    throw new ValidationError(`state.${badState}`, `must start with ${STATE_TENSOR_PREFIXES.join(" or ")}`);
  const all: WeightMap = new Map([...c.weights, ...(c.state ?? [])]);
  return encodeSafetensors(all, {
    ...c.metadata,
    [FORMAT_KEY]: CHECKPOINT_FORMAT,
    [KIND_KEY]: kind,
    [CONFIG_KEY]: JSON.stringify(config),
    [TOKENIZER_KEY]: JSON.stringify(tokenizer),
    ...(c.origin ? { [ORIGIN_KEY]: JSON.stringify(c.origin) } : {}),
  });
}

function fail(reason: string, cause?: unknown): never {
  throw new CheckpointError(`invalid checkpoint: ${reason}`, cause === undefined ? undefined : { cause });
}

function readFloats(bytes: Uint8Array, begin: number, end: number): Float32Array {
  if (LITTLE_ENDIAN_HOST) {
    // Copy into a fresh buffer: a Node Buffer's slice() is a view of the whole file's memory.
    const copy = new Uint8Array(end - begin);
    copy.set(bytes.subarray(begin, end));
    return new Float32Array(copy.buffer);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + begin, end - begin);
  return Float32Array.from({ length: (end - begin) / 4 }, (_, i) => view.getFloat32(i * 4, true));
}

/** Parses and fully validates checkpoint bytes; any defect is a CheckpointError. */
export function decodeCheckpoint(bytes: Uint8Array): DecodedCheckpoint {
  if (bytes.length < 8) fail(`${bytes.length} bytes is shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (n < 2 || n > MAX_HEADER_BYTES || 8 + n > bytes.length)
    fail(`header length ${n} does not fit ${bytes.length} bytes`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    fail("header is not valid UTF-8 JSON", e);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    fail("header is not a JSON object");
  const meta = header.__metadata__;
  if (typeof meta !== "object" || meta === null || Object.values(meta).some((v) => typeof v !== "string")) {
    fail("__metadata__ missing or not a string map");
  }
  const m = meta as Record<string, string>;
  const format = m[FORMAT_KEY];
  if (format !== CHECKPOINT_FORMAT) fail(`format '${format}' is not ${CHECKPOINT_FORMAT}`);
  const kind = m[KIND_KEY] as ModelKind;
  if (!MODEL_KINDS.includes(kind)) fail(`unsupported model kind '${kind}'`);
  let config: ModelConfig;
  let tokenizer: unknown;
  let origin: HfOrigin | undefined;
  try {
    config = validateModelConfig(kind, JSON.parse(m[CONFIG_KEY] ?? ""));
    tokenizer = JSON.parse(m[TOKENIZER_KEY] ?? "");
    if (m[ORIGIN_KEY] !== undefined) origin = JSON.parse(m[ORIGIN_KEY]) as HfOrigin;
  } catch (e) {
    fail("config, tokenizer or origin metadata unreadable", e);
  }
  const tokenizerOk = isHfKind(kind) ? isHfTokenizerDescription(tokenizer) : isByteTokenizer(tokenizer);
  if (!tokenizerOk) fail(`unsupported tokenizer ${m[TOKENIZER_KEY]} for a ${kind} model`);
  if (origin !== undefined && (typeof origin?.dir !== "string" || typeof origin.dtypes !== "object"))
    fail(`origin ${m[ORIGIN_KEY]} is not {dir, dtypes}`);
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const expected = modelParameterShapes(config);
  const entries: [string, number[], number, number][] = [];
  const stateNames = new Set<string>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (t.dtype !== "F32") fail(`tensor '${name}' has dtype ${String(t.dtype)}, only F32 is supported`);
    const shape = t.shape;
    const offs = t.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0))
      fail(`tensor '${name}' shape`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o)))
      fail(`'${name}' offsets`);
    const [begin, end] = offs as [number, number];
    let want = expected.get(name);
    if (want === undefined && isStateTensor(name)) {
      want = shape as number[];
      stateNames.add(name);
    }
    if (want === undefined) fail(`unexpected tensor '${name}' for this config`);
    if (want.join() !== (shape as number[]).join())
      fail(`tensor '${name}' is [${shape}], config says [${want}]`);
    if (begin < 0 || end > dataLength || end - begin !== 4 * want.reduce((a, b) => a * b, 1)) {
      fail(
        `tensor '${name}' offsets [${begin}, ${end}] do not match its shape within ${dataLength} data bytes`,
      );
    }
    entries.push([name, want, begin, end]);
  }
  const params = entries.length - stateNames.size;
  if (params !== expected.size) fail(`${params} tensors, config needs ${expected.size}`);
  entries.sort((a, b) => a[2] - b[2]);
  let cursor = 0;
  for (const [name, , begin, end] of entries) {
    if (begin !== cursor) fail(`tensor '${name}' leaves a gap or overlaps at byte ${begin}`);
    cursor = end;
  }
  if (cursor !== dataLength) fail(`${dataLength - cursor} trailing bytes after the last tensor`);
  const weights: WeightMap = new Map();
  const state: WeightMap = new Map();
  for (const [name, shape, begin, end] of entries) {
    const into = stateNames.has(name) ? state : weights;
    into.set(name, { shape, data: readFloats(bytes, dataStart + begin, dataStart + end) });
  }
  const metadata = Object.fromEntries(Object.entries(m).filter(([k]) => !RESERVED.has(k)));
  const tok = tokenizer as CheckpointTokenizer;
  return { kind, config, tokenizer: tok, weights, metadata, state, ...(origin ? { origin } : {}) };
}

/**
 * Writes a checkpoint atomically: temp file in the same directory, fsync, rename over `file`,
 * fsync the directory. A crash leaves either the old file or the new one, never a torn one.
 * Resolves with the SHA-256 of the bytes written, so callers need not encode them again.
 */
export async function saveCheckpoint(file: string, c: Checkpoint): Promise<string> {
  const bytes = encodeCheckpoint(c);
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    await mkdir(dir, { recursive: true });
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw new CheckpointError(`cannot write checkpoint ${file}: ${(e as Error).message}`, { cause: e });
  }
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is already atomic.
  } finally {
    await dh.close();
  }
  return sha256Hex(bytes);
}

/** Reads and validates a checkpoint file; a missing or corrupt file is a CheckpointError. */
export async function loadCheckpoint(file: string): Promise<DecodedCheckpoint> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new CheckpointError(`cannot read checkpoint ${file}: ${(e as Error).message}`, { cause: e });
  }
  return decodeCheckpoint(bytes);
}

/** The checkpoint of a live model (weights copied out of the backend, tokenizer and origin named). */
export function checkpointFromModel(model: CausalLM, metadata: Record<string, string> = {}): Checkpoint {
  return { ...modelIdentity(model), config: model.config, weights: model.getWeights(), metadata };
}

/** A model's kind, tokenizer description and origin: what a checkpoint of it must carry besides weights. */
export function modelIdentity(
  model: CausalLM,
): Pick<Checkpoint, "tokenizer" | "origin"> & { kind: ModelKind } {
  return {
    kind: model.kind,
    ...(model.tokenizer ? { tokenizer: describeHfTokenizer(model.tokenizer) } : {}),
    ...(model.origin ? { origin: model.origin } : {}),
  };
}

/**
 * A model of the kind `config` describes: fresh from a seed (see each class's constructor for its
 * init), or built straight from weights (WeightsError when they do not fit the config).
 */
export function createModel(
  config: ModelConfig,
  source: ParamSource,
  kind: ModelKind = modelKindOf(config),
): CausalLM {
  const c = validateModelConfig(kind, config);
  if (!("kind" in c)) return new TransformerLM(c, source);
  if (c.kind === "hf-gpt2") return new HfGpt2LM(c, source);
  if (c.kind === "hf-llama") return new HfLlamaLM(c, source);
  return c.kind === "seq2seq" ? new Seq2SeqLM(c, source) : new RnnLM(c, source);
}

/**
 * The model a checkpoint declares (any kind), built from its weights without a random
 * initialisation first; a Hugging Face kind gets its tokenizer back from the directory the
 * checkpoint names. Throws WeightsError if the weights do not fit the config, CheckpointError
 * if the tokenizer cannot be read again.
 */
export function modelFromCheckpoint(c: Checkpoint): CausalLM {
  const kind = c.kind ?? modelKindOf(c.config);
  const config = validateModelConfig(kind, c.config);
  if (!("kind" in config) || (config.kind !== "hf-gpt2" && config.kind !== "hf-llama"))
    return createModel(config, c.weights, kind);
  const extras: HfModelExtras = {
    ...(c.tokenizer?.kind === "hf" ? { tokenizer: tokenizerFromDescription(c.tokenizer) } : {}),
    ...(c.origin ? { origin: c.origin } : {}),
  };
  return config.kind === "hf-gpt2"
    ? new HfGpt2LM(config, c.weights, extras)
    : new HfLlamaLM(config, c.weights, extras);
}
