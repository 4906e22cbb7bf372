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
 * of `--repeats` rounds; the ratio is weights / raw (target ≤ 1.5). The last stdout line is the
 * JSON report. Figures depend on the machine's load; compare the two paths from the same run.
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

/** A safetensors blob of about `mb` MB: 12 "layers" of F32 tensors with random values. */
function weightsOf(mb: number, seed: number): Uint8Array {
  const floats = Math.round((mb * 1e6) / 4 / 12);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  let x = seed;
  for (let layer = 0; layer < 12; layer++) {
    const data = new Float32Array(floats);
    for (let i = 0; i < floats; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      data[i] = x / 2 ** 32 - 0.5;
    }
    tensors.set(`h.${layer}.weight`, { shape: [floats], data });
  }
  return encodeSafetensors(tensors, { format: "bench" });
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
}
const cells: Cell[] = [];
try {
  const optimizer = await connect("bench-optimizer");
  const publisher = new WeightsPublisher({ signer, retention: 2 });
  const maxReplicas = Math.max(...replicaCounts);
  const replicaBuses = await Promise.all(
    Array.from({ length: maxReplicas }, (_, i) => connect(`bench-policy-${i}`)),
  );
  let round = 0;
  for (const mb of sizesMb) {
    for (const n of replicaCounts) {
      const raw: number[] = [];
      const weights: number[] = [];
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
      let blob = weightsOf(mb, ++round);
      await publisher.publish(optimizer, { blob, runId: "bench", step: 0, modelKind: "bench" });
      await Promise.all(replicas.map((r, i) => r.follow(replicaBuses[i] as NatsBus)));
      const target = Number(publisher.lastVersion);
      while (replicas.some((r) => r.serving.version < target)) await new Promise((r) => setTimeout(r, 5));
      const objects = await optimizer.objects();
      for (let rep = 0; rep < repeats; rep++) {
        blob = weightsOf(mb, ++round);
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
        await publisher.publish(optimizer, { blob, runId: "bench", step: rep + 1, modelKind: "bench" });
        await Promise.all(served);
        weights.push(performance.now() - t0);
      }
      for (const r of replicas) await r.close();
      const cell = {
        sizeMb: mb,
        sizeBytes: blob.length,
        replicas: n,
        rawMs: Math.round(median(raw) * 10) / 10,
        weightsMs: Math.round(median(weights) * 10) / 10,
        ratio: Math.round((median(weights) / median(raw)) * 100) / 100,
      };
      cells.push(cell);
      if (!values.json) {
        process.stdout.write(
          `${mb} MB × ${n} replica(s): raw put+get ${cell.rawMs} ms, publish→serving ${cell.weightsMs} ms, ratio ${cell.ratio}\n`,
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
