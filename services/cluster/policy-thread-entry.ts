/**
 * What runs inside the Policy's worker thread (started by policy-thread.ts): its own TensorFlow.js
 * backend and a Policy gRPC server on loopback, following the main thread's bus through the
 * bridge port. It answers the main thread with one `ready` (or `failed`) message, forwards its log
 * lines (with the ids of the span each was written in), answers `memory` with its memory-probe.ts
 * snapshot and `metrics` with its Prometheus registry's, exports its spans when the main thread
 * traces, and on `close` shuts the server down (and flushes its spans) and says `closed`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { PortBus } from "../core/src/bus/port-bus.js";
import { METRICS_REGISTRY } from "../core/src/ops/metrics.js";
import { spanLogContext } from "../core/src/telemetry/log-format.js";
import { startTracing } from "../core/src/telemetry/tracing.js";
import { threadMemory } from "../core/src/thread/memory-probe.js";
import { startPolicyServer } from "../policy/main.js";
import type { PolicyThreadInit, ThreadMessage } from "./policy-thread.js";

const port = parentPort;
if (!port) throw new Error("policy-thread-entry.ts runs only as a worker thread (see policy-thread.ts)");
const init = workerData as PolicyThreadInit;
const send = (m: ThreadMessage) => port.postMessage(m);
const bus = new PortBus(init.busPort);
// This thread's OTel globals are its own: without this its spans would be no-ops.
const tracing = init.tracing ? startTracing(init.tracing) : undefined;

try {
  const policy = await startPolicyServer({
    host: init.host,
    port: 0,
    checkpoint: init.checkpoint,
    bus,
    backend: init.backend,
    ...(init.batchRows !== undefined ? { batchRows: init.batchRows } : {}),
    ...(init.queueRows !== undefined ? { queueRows: init.queueRows } : {}),
    ...(init.weightsVerifyKey ? { weightsVerifyKey: init.weightsVerifyKey } : {}),
    log: (line) => send({ type: "log", line, ...spanLogContext() }),
  });
  port.on("message", (m: unknown) => {
    if (m === "memory") send({ type: "memory", memory: threadMemory() });
    if (m === "metrics") {
      METRICS_REGISTRY.getMetricsAsJSON().then((metrics) => send({ type: "metrics", metrics }));
    }
    if (m !== "close") return;
    policy
      .close()
      .then(() => bus.close())
      .then(() => tracing?.shutdown())
      .finally(() => {
        init.busPort.close();
        send({ type: "closed" });
      });
  });
  send({ type: "ready", address: policy.server.address });
} catch (err) {
  const e = err instanceof Error ? err : new Error(String(err));
  send({ type: "failed", name: e.name, message: e.message });
  await tracing?.shutdown();
  await bus.close();
  init.busPort.close();
}
