/**
 * The NATS capacities docs/scaling.md divides by: how many trajectory-sized messages a
 * nats-server on this machine takes through a JetStream work queue (publish with `Nats-Msg-Id`,
 * then pull and double-ack, as the Rollout and the Optimizer do), and how fast its Object Store
 * writes a weights blob once and serves it to 1, 2 and 4 readers at once (the fan-out of one
 * weights version to its replicas). Through the project's own NatsBus, so the figures include
 * its overheads, and with the server's CPU per second of each, so it is known what saturates.
 *
 *   npx tsx bench/scale-inputs.ts [--messages 20000] [--bytes 1500] [--blob-mb 5,23]
 *
 * One JSON report on stdout.
 */
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { NatsBus } from "../services/core/src/bus/nats-bus.js";
import { startNatsServer } from "../services/core/src/bus/nats-server.js";
import { OPTIMIZER_CONSUMER } from "../services/core/src/bus/subjects.js";
import { cpuSeconds } from "./replicas-probe.js";

const { values: v } = parseArgs({
  options: {
    messages: { type: "string", default: "20000" },
    bytes: { type: "string", default: "1500" },
    "blob-mb": { type: "string", default: "5,23" },
  },
});
const messages = Number(v.messages);
const bytes = Number(v.bytes);
const blobsMb = (v["blob-mb"] ?? "").split(",").map(Number);
if (![messages, bytes, ...blobsMb].every((n) => Number.isFinite(n) && n > 0)) {
  process.stderr.write("bench/scale-inputs: --messages, --bytes and --blob-mb must be positive numbers\n");
  process.exit(2);
}

const nats = await startNatsServer();
const bus = await NatsBus.connect(nats.url, { name: "bench-scale-inputs" });
const round = (x: number, d = 1) => Number(x.toFixed(d));
/** Run `work`, returning its wall seconds and the server's CPU seconds per wall second. */
const timed = async (work: () => Promise<void>) => {
  const cpu0 = cpuSeconds(nats.pid);
  const t0 = performance.now();
  await work();
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, serverCpuPerWall: round((cpuSeconds(nats.pid) - cpu0) / seconds, 2) };
};
try {
  const q = await bus.queue("trajectories");
  const payload = randomBytes(bytes);
  const inFlight = 64;
  const pub = await timed(async () => {
    for (let i = 0; i < messages; i += inFlight) {
      const n = Math.min(inFlight, messages - i);
      await Promise.all(Array.from({ length: n }, (_, k) => q.publish(payload, { msgId: `m${i + k}` })));
    }
  });
  let got = 0;
  const sub = await timed(async () => {
    while (got < messages) {
      const msgs = await q.pull(OPTIMIZER_CONSUMER, { max: 256, expiresMs: 1000 });
      await Promise.all(msgs.map((m) => m.ack()));
      got += msgs.length;
    }
  });
  const objects = await bus.objects();
  const blobs = [];
  for (const mb of blobsMb) {
    const blob = randomBytes(Math.round(mb * 1024 * 1024));
    const name = `blob-${mb}`;
    const put = await timed(async () => {
      await objects.put(name, blob);
    });
    const readers: Record<string, { mbPerSecond: number; serverCpuPerWall: number }> = {};
    for (const k of [1, 2, 4]) {
      const get = await timed(async () => {
        await Promise.all(Array.from({ length: k }, () => objects.get(name)));
      });
      readers[k] = { mbPerSecond: round((mb * k) / get.seconds), serverCpuPerWall: get.serverCpuPerWall };
    }
    await objects.delete(name);
    blobs.push({ mb, putMbPerSecond: round(mb / put.seconds), putServerCpu: put.serverCpuPerWall, readers });
  }
  process.stdout.write(
    `${JSON.stringify({
      queue: {
        messages,
        bytes,
        publishPerSecond: Math.round(messages / pub.seconds),
        publishServerCpu: pub.serverCpuPerWall,
        pullAckPerSecond: Math.round(messages / sub.seconds),
        pullAckServerCpu: sub.serverCpuPerWall,
      },
      objectStore: blobs,
    })}\n`,
  );
} finally {
  await bus.close();
  await nats.stop();
}
