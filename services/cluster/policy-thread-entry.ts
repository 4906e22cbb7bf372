/**
 * What runs inside the Policy's worker thread (started by policy-thread.ts): its own TensorFlow.js
 * backend and a Policy gRPC server on loopback, following the main thread's bus through the
 * bridge port. It answers the main thread with one `ready` (or `failed`) message, forwards its log
 * lines, answers `memory` with its memory-probe.ts snapshot, and on `close` shuts the server down and says `closed`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { PortBus } from "../core/src/bus/port-bus.js";
import { threadMemory } from "../core/src/thread/memory-probe.js";
import { startPolicyServer } from "../policy/main.js";
import type { PolicyThreadInit, ThreadMessage } from "./policy-thread.js";

const port = parentPort;
if (!port) throw new Error("policy-thread-entry.ts runs only as a worker thread (see policy-thread.ts)");
const init = workerData as PolicyThreadInit;
const send = (m: ThreadMessage) => port.postMessage(m);
const bus = new PortBus(init.busPort);

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
    log: (line) => send({ type: "log", line }),
  });
  port.on("message", (m: unknown) => {
    if (m === "memory") send({ type: "memory", memory: threadMemory() });
    if (m !== "close") return;
    policy
      .close()
      .then(() => bus.close())
      .finally(() => {
        init.busPort.close();
        send({ type: "closed" });
      });
  });
  send({ type: "ready", address: policy.server.address });
} catch (err) {
  const e = err instanceof Error ? err : new Error(String(err));
  send({ type: "failed", name: e.name, message: e.message });
  await bus.close();
  init.busPort.close();
}
