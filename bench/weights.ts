/**
 * The weights distribution benchmark: publish → every Policy replica serving the new version,
 * against a raw Object Store put + get of the same bytes (each replica getting them), in the
 * same run, on a real nats-server (file storage) started here:
 *
 *   npx tsx bench/weights.ts [--sizes-mb 5,50] [--replicas 1,2,4] [--repeats 3] [--json]
 *
 * "Weights" is the real path: a signing `WeightsPublisher` (one hashing pass, the blob streamed
 * in chunks, signed manifest, pointer compare-and-set) and `PolicyReplica`s, each on its own NATS
 * connection, that see the pointer move, check the signature, stream and verify the blob per
 * tensor and swap. Their loader builds no tensors (a model that is only its version), so the
 * figure is the distribution cost, not model construction. "Raw" is `put` of the blob and one
 * `get` per replica (concurrently) through the same bus implementation. Each cell is the median
 * of `--repeats` rounds; the ratio is weights / raw (target ≤ 1.5). "Delta" is a third path in
 * the same rounds: the next version changes one of the 12 layers only, so the publisher stores a
 * per-tensor delta (weights-delta.ts) and each replica rebuilds and verifies the full blob from
 * the one it serves; the cell reports its publish → serving time and the bytes it put
 * (`deltaBytes`, against `sizeBytes`). The last stdout line is the JSON report. Figures depend on
 * the machine's load; compare the paths from the same run.
 */
import { generateKeyPairSync } from "node:crypto";
import { parseArgs } from "node:util";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { startNatsServer } from "../services/core/src/bus/nats-server.js";
import { encodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import { byteTokenizer } from "../services/core/src/model/tokenizer.js";
import { WeightsPublisher } from "../services/core/src/weights/weights-publisher.js";
import { signerOf } from "../services/core/src/weights/weights-signing.js";
import type { LoadedModel, ModelLoader } from "../services/policy/loaded-model.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";

const { values } = parseArgs({
  options: {
    "sizes-mb": { type: "string", default: "5,50" },
    replicas: { type: "string", default: "1,2,4" },
    repeats: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
  },
});
const list = (s: string, what: string) =>
  s.split(",").map((x) => {
    const n = Number(x);
    if (!(n > 0)) {
      process.stderr.write(`--${what}: '${x}' is not a positive number\n`);
      process.exit(2);
    }
    return n;
  });
const sizesMb = list(values["sizes-mb"], "sizes-mb");
const replicaCounts = list(values.replicas, "replicas").map(Math.round);
const repeats = Math.round(list(values.repeats, "repeats")[0] as number);

/** A model that is only the blob's size: the replica's swap without building tensors. */
function stubModel(bytes: number): LoadedModel {
  return {
    kind: "bench",
    backend: "none",
    vocabSize: 258,
    contextLength: 8,
    parameterCount: bytes / 4,
    configJson: "{}",
    tokenizer: byteTokenizer,
    generate: async () => [],
    logprobs: async () => [],
    dispose: () => {},
  };
}
const loader: ModelLoader = {
  fromFile: () => stubModel(0),
  fromBlob: (blob) => stubModel(blob.length),
};

type Layers = Map<string, { shape: number[]; data: Float32Array }>;

/** `n` floats of a seeded generator in [-0.5, 0.5). */
function randomFloats(n: number, seed: number): Float32Array {
  const data = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    data[i] = x / 2 ** 32 - 0.5;
  }
  return data;
}

/** About `mb` MB of weights: 12 "layers" of F32 tensors with random values. */
function layersOf(mb: number, seed: number): Layers {
  const floats = Math.round((mb * 1e6) / 4 / 12);
  const tensors: Layers = new Map();
  for (let layer = 0; layer < 12; layer++) {
    tensors.set(`h.${layer}.weight`, { shape: [floats], data: randomFloats(floats, seed * 12 + layer) });
  }
  return tensors;
}

/** The safetensors blob of `layers`. */
const blobOf = (layers: Layers) => encodeSafetensors(layers, { format: "bench" });

/** `layers` with layer 0 given new values (the other 11 unchanged): the delta path's version. */
function oneLayerMoved(layers: Layers, seed: number): Layers {
  const moved: Layers = new Map(layers);
  const first = layers.get("h.0.weight") as { shape: number[]; data: Float32Array };
  moved.set("h.0.weight", { shape: first.shape, data: randomFloats(first.data.length, seed) });
  return moved;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const server = await startNatsServer();
const namespace = `bench${process.pid}`;
const connect = (name: string) => NatsBus.connect(server.url, { namespace, name });
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const signer = signerOf(privateKey);
const verifier = { publicKey, keyId: signer.keyId };

interface Cell {
  sizeMb: number;
  sizeBytes: number;
  replicas: number;
  rawMs: number;
  weightsMs: number;
  ratio: number;
  /** Publish → serving of a version with one layer of 12 changed (a per-tensor delta). */
  deltaMs: number;
  /** Bytes that delta version put into the Object Store (a full version puts `sizeBytes`). */
  deltaBytes: number;
}
const cells: Cell[] = [];
try {
  const optimizer = await connect("bench-optimizer");
  // Deltas on: a chain never restarts within a cell (each full round starts one anyway).
  const publisher = new WeightsPublisher({ signer, retention: 2, fullEvery: 1000 });
  const maxReplicas = Math.max(...replicaCounts);
  const replicaBuses = await Promise.all(
    Array.from({ length: maxReplicas }, (_, i) => connect(`bench-policy-${i}`)),
  );
  let round = 0;
  for (const mb of sizesMb) {
    for (const n of replicaCounts) {
      const raw: number[] = [];
      const weights: number[] = [];
      const deltas: number[] = [];
      let deltaBytes = 0;
      // Replicas of this cell follow the pointer; each resolves `served` when it swaps.
      const waiting = new Map<number, () => void>();
      const replicas = replicaBuses.slice(0, n).map(
        (_, i) =>
          new PolicyReplica(
            stubModel(0),
            loader,
            (line) => {
              const v = /now serving weights v(\d+)/.exec(line);
              if (v) waiting.get(i)?.();
              else if (line.includes("could not swap")) process.stderr.write(`${line}\n`);
            },
            { verifier },
          ),
      );
      // A first publish (not timed) so every replica is past its catch-up.
      let blob = blobOf(layersOf(mb, ++round));
      const first = await publisher.publish(optimizer, { blob, runId: "bench", step: 0, modelKind: "bench" });
      const reference = {
        objectName: first.objectName,
        sha256: first.sha256,
        version: Number(first.version),
      };
      await Promise.all(replicas.map((r, i) => r.follow(replicaBuses[i] as NatsBus)));
      const target = Number(publisher.lastVersion);
      while (replicas.some((r) => r.serving.version < target)) await new Promise((r) => setTimeout(r, 5));
      const objects = await optimizer.objects();
      for (let rep = 0; rep < repeats; rep++) {
        const layers = layersOf(mb, ++round);
        blob = blobOf(layers);
        // Raw: put, then every replica's connection gets the bytes.
        let t0 = performance.now();
        const name = `bench/raw-${round}`;
        await objects.put(name, blob);
        await Promise.all(replicaBuses.slice(0, n).map(async (b) => (await b.objects()).get(name)));
        raw.push(performance.now() - t0);
        await objects.delete(name);
        // Weights: publish, then every replica verified and swapped.
        const served = replicas.map((_, i) => new Promise<void>((resolve) => waiting.set(i, resolve)));
        t0 = performance.now();
        const step = 2 * rep + 1;
        const full = await publisher.publish(optimizer, {
          blob,
          runId: "bench",
          step,
          modelKind: "bench",
          reference,
        });
        await Promise.all(served);
        if (full.baseVersion !== 0n) throw new Error(`v${full.version} went out as a delta, not full`);
        weights.push(performance.now() - t0);
        // Delta: the next version moves one layer; replicas rebuild it on the blob they serve.
        const next = blobOf(oneLayerMoved(layers, ++round));
        const swapped = replicas.map((_, i) => new Promise<void>((resolve) => waiting.set(i, resolve)));
        t0 = performance.now();
        const m = await publisher.publish(optimizer, {
          blob: next,
          runId: "bench",
          step: step + 1,
          modelKind: "bench",
          reference,
        });
        await Promise.all(swapped);
        deltas.push(performance.now() - t0);
        if (m.baseVersion === 0n) throw new Error(`v${m.version} went out full, not as a delta`);
        deltaBytes = Number(m.blobSizeBytes);
      }
      for (const r of replicas) await r.close();
      const cell = {
        sizeMb: mb,
        sizeBytes: blob.length,
        replicas: n,
        rawMs: Math.round(median(raw) * 10) / 10,
        weightsMs: Math.round(median(weights) * 10) / 10,
        ratio: Math.round((median(weights) / median(raw)) * 100) / 100,
        deltaMs: Math.round(median(deltas) * 10) / 10,
        deltaBytes,
      };
      cells.push(cell);
      if (!values.json) {
        process.stdout.write(
          `${mb} MB × ${n} replica(s): raw put+get ${cell.rawMs} ms, publish→serving ${cell.weightsMs} ms, ratio ${cell.ratio}; delta (1 of 12 layers, ${cell.deltaBytes} of ${cell.sizeBytes} bytes) ${cell.deltaMs} ms\n`,
        );
      }
    }
  }
  for (const b of [optimizer, ...replicaBuses]) await b.close();
} finally {
  await server.stop();
}
process.stdout.write(
  `${JSON.stringify({ repeats, cells, worstRatio: Math.max(...cells.map((c) => c.ratio)) })}\n`,
);
