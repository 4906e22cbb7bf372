/**
 * Replica scaling: does Rollout throughput double with a second Policy replica, and does a replica
 * that joins (or leaves) mid-run change throughput with no configuration change?
 *
 * Real processes, as `rlaif up` starts them (`rlaif serve <service>`): a nats-server (JetStream,
 * monitoring on), one Feedback, and per replica one Policy plus the Rollout worker that calls it.
 * Every Rollout worker pulls from the same durable jobs consumer, so a replica joins by starting
 * and leaves by stopping: nobody else is told. There is no Optimizer: this script keeps the jobs
 * queue topped up itself and consumes (acks) the trajectories, so nothing but generation can be
 * the bottleneck. Policy A is pinned to CPU 0 and Policy B to CPU 1 (`taskset`); nats-server, the
 * Feedback, the Rollout workers and this script float, and the report gives the CPU each took.
 *
 * Phases: A alone (after a warm-up, one window); B joins (warm-up, window); B leaves (window);
 * then feeding stops and every job's trajectories must arrive, each once.
 *
 *   npx tsx bench/replicas.ts [--window-s 40] [--warmup-s 8] [--samples 8] [--max-new-tokens 24]
 *     [--concurrency 16] [--checkpoint f] [--backend b] [--no-pin] [--autogroup-nice=-19]
 *
 * `--autogroup-nice n` gives every process it starts (and itself) that autogroup nice value, so
 * on a shared machine other sessions' work stays off the measured cores (replicas-probe.ts).
 *
 * Prints a per-second timeline on stderr and one JSON report on stdout's last line.
 */

import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type ServiceInstance, startServiceProcess } from "../services/cluster/service-process.js";
import { PromptJobSchema, TrajectorySchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { RolloutService } from "../services/core/gen/rlaif/rollout/v1/rollout_pb.js";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { freePort, startNatsServer } from "../services/core/src/bus/nats-server.js";
import { OPTIMIZER_CONSUMER } from "../services/core/src/bus/subjects.js";
import { defaultConfig } from "../services/core/src/config/settings.js";
import { createClient } from "../services/core/src/grpc/client.js";
import {
  cpuSeconds,
  type Interval,
  interval,
  natsCounters,
  pin,
  rssMb,
  type Snapshot,
  setAutogroupNice,
} from "./replicas-probe.js";

const { values: v } = parseArgs({
  options: {
    "window-s": { type: "string", default: "40" },
    "warmup-s": { type: "string", default: "8" },
    samples: { type: "string", default: "8" },
    "max-new-tokens": { type: "string", default: "24" },
    concurrency: { type: "string", default: "16" },
    checkpoint: { type: "string", default: defaultConfig().services.checkpoint },
    backend: { type: "string", default: defaultConfig().services.backend },
    "no-pin": { type: "boolean", default: false },
    "autogroup-nice": { type: "string" },
  },
});
const num = (flag: keyof typeof v) => {
  const n = Number(v[flag]);
  if (!(Number.isFinite(n) && n > 0)) {
    process.stderr.write(`bench/replicas: --${flag} must be a positive number, got ${v[flag]}\n`);
    process.exit(2);
  }
  return n;
};
const windowMs = num("window-s") * 1000;
const warmupMs = num("warmup-s") * 1000;
const samples = num("samples");
const maxNewTokens = num("max-new-tokens");
const concurrency = String(num("concurrency"));
const PROMPTS = ["The film was", "I think that", "She said", "It is a", "He had done", "In the end"];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (line: string) => process.stderr.write(`${line}\n`);

/** The last lines the services logged, shown if the benchmark fails. */
const tail: string[] = [];
const log = (line: string) => {
  tail.push(line);
  if (tail.length > 40) tail.shift();
};

const autogroupNice = v["autogroup-nice"] === undefined ? undefined : Number(v["autogroup-nice"]);
if (autogroupNice !== undefined && !(Number.isInteger(autogroupNice) && Math.abs(autogroupNice) <= 19)) {
  process.stderr.write(`bench/replicas: --autogroup-nice must be a whole number in [-19, 19]\n`);
  process.exit(2);
}
/** Apply --autogroup-nice to a process this benchmark started. */
const prioritise = (pid: number) => {
  if (autogroupNice !== undefined) setAutogroupNice(pid, autogroupNice);
};
prioritise(process.pid);
const monitorPort = await freePort();
const nats = await startNatsServer({ monitorPort });
prioritise(nats.pid);
const procs: Record<string, ServiceInstance> = {};
const rollouts: Record<string, ReturnType<typeof createClient<typeof RolloutService>>> = {};
let bus: NatsBus | undefined;
let feeding = true;
let consuming = true;

/** Start replica `name`: its Policy pinned to `cpu`, then the Rollout worker that calls it. */
async function startReplica(name: string, cpu: string, feedbackAddress: string): Promise<void> {
  const policy = await startServiceProcess(
    "policy",
    0,
    ["--nats", nats.url, "--checkpoint", v.checkpoint, "--backend", v.backend],
    log,
  );
  if (!v["no-pin"]) pin(policy.pid, cpu);
  prioritise(policy.pid);
  procs[`policy${name}`] = policy;
  const rollout = await startServiceProcess(
    "rollout",
    0,
    [
      ...["--nats", nats.url, "--policy-address", policy.address],
      ...["--feedback-address", feedbackAddress, "--rollout-concurrency", concurrency],
    ],
    log,
  );
  prioritise(rollout.pid);
  procs[`rollout${name}`] = rollout;
  rollouts[name] = createClient(RolloutService, rollout.address, { defaultTimeoutMs: 10_000 });
}

/** Stop replica `name`: its worker first (it finishes the jobs in hand), then its Policy. */
async function stopReplica(name: string): Promise<void> {
  for (const key of [`rollout${name}`, `policy${name}`]) {
    await procs[key]?.stop(30_000);
    delete procs[key];
  }
  rollouts[name]?.close();
  delete rollouts[name];
}

try {
  const feedback = await startServiceProcess("feedback", 0, [], log);
  prioritise(feedback.pid);
  procs.feedback = feedback;
  bus = await NatsBus.connect(nats.url, { name: "bench-replicas" });
  const jobs = await bus.queue("jobs");
  const trajectories = await bus.queue("trajectories");
  await startReplica("A", "0", feedback.address);

  // Feed: keep a backlog of several rounds of every worker's lanes, so no worker ever waits.
  let published = 0;
  const backlog = 4 * Number(concurrency) * 2;
  const feeder = (async () => {
    while (feeding) {
      for (let n = backlog - (await jobs.pending()); n > 0 && feeding; n--) {
        const i = published++;
        const job = create(PromptJobSchema, {
          runId: "bench",
          step: Math.floor(i / 8) + 1,
          index: i % 8,
          prompt: PROMPTS[i % PROMPTS.length] as string,
          samples,
          sampling: { maxNewTokens, temperature: 1, seed: BigInt(i + 1) },
          minWeightsVersion: 0n,
        });
        await jobs.publish(toBinary(PromptJobSchema, job), { msgId: `bench.${job.step}.${job.index}` });
      }
      await sleep(250);
    }
  })();
  // Consume: what an Optimizer would, counted per second; every id must arrive exactly once.
  const seen = new Set<string>();
  let duplicates = 0;
  let tokens = 0;
  const perSecond: number[] = [];
  const t0 = performance.now();
  const consumer = (async () => {
    while (consuming) {
      const msgs = await trajectories.pull(OPTIMIZER_CONSUMER, { max: 256, expiresMs: 1000 });
      await Promise.all(msgs.map((m) => m.ack()));
      for (const msg of msgs) {
        const t = fromBinary(TrajectorySchema, msg.data);
        if (seen.has(t.id)) duplicates++;
        seen.add(t.id);
        tokens += t.completionTokens.length;
        const sec = Math.floor((performance.now() - t0) / 1000);
        perSecond[sec] = (perSecond[sec] ?? 0) + 1;
      }
    }
  })();
  const driverCpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const snapshot = async (): Promise<Snapshot> => {
    const status = await Promise.all(
      Object.entries(rollouts).map(async ([k, c]) => [k, await c.getStatus({})] as const),
    );
    return {
      at: performance.now(),
      trajectories: seen.size,
      tokens,
      cpu: {
        ...Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, cpuSeconds(p.pid)])),
        nats: cpuSeconds(nats.pid),
        driver: driverCpu(),
      },
      nats: await natsCounters(monitorPort),
      published: Object.fromEntries(status.map(([k, s]) => [k, Number(s.trajectoriesPublished)])),
      jobs: Object.fromEntries(status.map(([k, s]) => [k, Number(s.jobsCompleted)])),
    };
  };
  const measure = async (what: string): Promise<Interval> => {
    const a = await snapshot();
    await sleep(windowMs);
    const figures = interval(a, await snapshot());
    say(`bench/replicas: ${what}: ${JSON.stringify(figures)}`);
    return figures;
  };
  const mark = (what: string) => {
    const at = (performance.now() - t0) / 1000;
    say(`bench/replicas: t=${at.toFixed(1)} s ${what}`);
    return Number(at.toFixed(1));
  };

  await sleep(warmupMs);
  const one = await measure("1 replica (A)");
  const joinAt = mark("replica B joins (Policy B + its Rollout worker start)");
  await startReplica("B", "1", feedback.address);
  const servingAt = mark("replica B serving");
  await sleep(warmupMs);
  const two = await measure("2 replicas (A + B)");
  const rss = {
    ...Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, rssMb(p.pid)])),
    nats: rssMb(nats.pid),
  };
  const leaveAt = mark("replica B leaves (SIGTERM)");
  await stopReplica("B");
  const goneAt = mark("replica B gone");
  const after = await measure("1 replica again (B left)");
  // Account for every job: stop feeding and wait for the rest of the trajectories.
  feeding = false;
  await feeder;
  const expected = published * samples;
  const deadline = performance.now() + 120_000;
  while (seen.size < expected && performance.now() < deadline) await sleep(200);
  consuming = false;
  await consumer;
  say(`bench/replicas: trajectories per second, from t=0: ${Array.from(perSecond, (n) => n ?? 0).join(" ")}`);
  const ratio = (x: number, y: number) => Number((x / y).toFixed(2));
  process.stdout.write(
    `${JSON.stringify({
      checkpoint: v.checkpoint,
      samples,
      maxNewTokens,
      concurrency: Number(concurrency),
      pinned: !v["no-pin"],
      autogroupNice: autogroupNice ?? null,
      phases: { oneReplica: one, twoReplicas: two, afterLeave: after },
      events: { joinAt, servingAt, leaveAt, goneAt },
      rssMbWithTwoReplicas: rss,
      ratio: {
        trajectories: ratio(two.trajectoriesPerSecond, one.trajectoriesPerSecond),
        tokens: ratio(two.tokensPerSecond, one.tokensPerSecond),
        // Against the mean of both one-replica windows (before B joined and after it left), so a
        // drift of the machine during the run weighs on both sides.
        trajectoriesBracketed: ratio(
          two.trajectoriesPerSecond,
          (one.trajectoriesPerSecond + after.trajectoriesPerSecond) / 2,
        ),
        target: 1.8,
      },
      accounting: { jobs: published, expected, delivered: seen.size, duplicates, lost: expected - seen.size },
      timeline: Array.from(perSecond, (n) => n ?? 0),
    })}\n`,
  );
} catch (err) {
  say(`bench/replicas failed: ${(err as Error).message}\n${tail.join("\n")}`);
  process.exitCode = 1;
} finally {
  feeding = false;
  consuming = false;
  for (const c of Object.values(rollouts)) c.close();
  await Promise.all(Object.keys(procs).map((k) => procs[k]?.stop(30_000)));
  await bus?.close();
  await nats.stop();
}
