/**
 * The embedded run's Policy in a worker thread of its own. Why: JavaScript and the tfjs-wasm
 * backend are single-threaded, so with every service on the main thread one core does all the
 * work. In its own thread the Policy samples on the second core while the main thread learns
 * (with `maxStaleness` > 0 the Optimizer queues the next step's jobs before it updates).
 *
 * The thread loads its own TensorFlow.js and serves the same Policy gRPC server as `rlaif serve
 * policy`, on loopback; the Rollout reaches it by address, exactly as distributed. It follows the
 * weights through a {@link PortBus} over a MessagePort: the embedded bus is in-memory in the main
 * thread, and the replica only reads the latest-weights pointer and the blobs it names (moved
 * across, not copied, and sent with the pointer's new entry). The same weights and seeds give the
 * same samples in either thread.
 */
import type { EventLoopUtilization } from "node:perf_hooks";
import { MessageChannel, type MessagePort } from "node:worker_threads";
import type { Bus } from "../core/src/bus/bus.js";
import { serveBusOverPort } from "../core/src/bus/port-bus.js";
import { LATEST_WEIGHTS_KEY } from "../core/src/bus/subjects.js";
import { WorkerThreadError } from "../core/src/errors.js";
import type { BackendName } from "../core/src/model/backend.js";
import type { MetricsSnapshot } from "../core/src/ops/ops-http.js";
import { inSpanOf } from "../core/src/telemetry/spans.js";
import type { TracingConfig } from "../core/src/telemetry/tracing.js";
import type { ThreadMemory } from "../core/src/thread/memory-probe.js";
import { startModuleWorker, threadExited, threadFailed } from "../core/src/thread/worker-rpc.js";
import { manifestObjectNames } from "../core/src/weights/weights-channel.js";

/** What the thread is started with (its `workerData`). */
export interface PolicyThreadInit {
  host: string;
  checkpoint: string;
  backend: "auto" | BackendName;
  /** The replica's batch and queue bounds (see PolicyServerOptions; absent: the defaults). */
  batchRows?: number;
  queueRows?: number;
  /** PEM file of the key the replica verifies weights with (see PolicyServerOptions). */
  weightsVerifyKey?: string;
  /** The thread's end of the bus bridge. */
  busPort: MessagePort;
  /** Export the thread's spans (its own OTel globals) here; absent: tracing off. */
  tracing?: TracingConfig;
}

/** Messages from the thread to the main thread. */
export type ThreadMessage =
  | { type: "ready"; address: string }
  | { type: "log"; line: string; traceId?: string; spanId?: string }
  | { type: "metrics"; metrics: MetricsSnapshot }
  | { type: "failed"; name: string; message: string }
  | { type: "memory"; memory: ThreadMemory }
  | { type: "closed" };

/** Options of {@link startPolicyThread}. */
export interface PolicyThreadOptions {
  host: string;
  checkpoint: string;
  backend: "auto" | BackendName;
  /** Most rows decoded together, and queued beyond that (see PolicyServerOptions). */
  batchRows?: number;
  queueRows?: number;
  /** PEM file of the key the replica verifies weights with (see PolicyServerOptions). */
  weightsVerifyKey?: string;
  /** The bus the replica follows (read through the bridge). */
  bus: Bus;
  /** Gets the thread's log lines, called inside the span each was written in (its ids). */
  log?: (line: string) => void;
  /** The thread's tracing (service name included); absent: its spans are not recorded. */
  tracing?: TracingConfig;
  /** Called once if the thread dies after it started (not on close()). */
  onFailure?: (err: WorkerThreadError) => void;
}

/** A running Policy thread. */
export interface PolicyThread {
  /** Where its Policy gRPC server listens. */
  readonly address: string;
  /**
   * The thread's event-loop utilisation (`performance.eventLoopUtilization`): how much of the
   * time it had work, so a bench can tell whether sampling really overlapped learning.
   */
  eventLoopUtilization(prev?: EventLoopUtilization): EventLoopUtilization;
  /** The thread's memory and live tensors (memory-probe.ts), so a soak can tell which thread grows. */
  memory(): Promise<ThreadMemory>;
  /** The thread's Prometheus metrics (its own registry), so the process's /metrics has the Policy's too. */
  metrics(): Promise<MetricsSnapshot>;
  /** Shut the server down, then end the thread; idempotent. */
  close(): Promise<void>;
}

/** Most time close() gives the thread's server to finish in-flight calls before it is terminated. */
const CLOSE_GRACE_MS = 5_000;

/** Start the Policy in a worker thread; resolves once its server listens (rejects with why not). */
export async function startPolicyThread(opts: PolicyThreadOptions): Promise<PolicyThread> {
  const channel = new MessageChannel();
  // The blobs a new latest-weights entry names go with it, so the thread swaps them in before
  // the next step's requests reach it, even while this thread is busy learning.
  const stopServing = serveBusOverPort(opts.bus, channel.port1, {
    sendWithEntry: (key, value) => (key === LATEST_WEIGHTS_KEY ? manifestObjectNames(value) : []),
  });
  const init: PolicyThreadInit = {
    host: opts.host,
    checkpoint: opts.checkpoint,
    backend: opts.backend,
    ...(opts.batchRows !== undefined ? { batchRows: opts.batchRows } : {}),
    ...(opts.queueRows !== undefined ? { queueRows: opts.queueRows } : {}),
    ...(opts.weightsVerifyKey ? { weightsVerifyKey: opts.weightsVerifyKey } : {}),
    ...(opts.tracing ? { tracing: opts.tracing } : {}),
    busPort: channel.port2,
  };
  const worker = startModuleWorker(new URL("./policy-thread-entry.ts", import.meta.url), init, [
    channel.port2,
  ]);
  let closing = false;
  let closed: () => void = () => {};
  const closedMsg = new Promise<void>((r) => {
    closed = r;
  });
  const memoryWaiters: ((m: ThreadMemory) => void)[] = [];
  const metricsWaiters: ((m: MetricsSnapshot) => void)[] = [];
  const release = () => {
    stopServing();
    channel.port1.close();
  };
  const address = await new Promise<string>((resolve, reject) => {
    let started = false;
    let failed = false;
    const fail = (err: WorkerThreadError) => {
      if (!started) reject(err);
      else if (!closing && !failed) opts.onFailure?.(err);
      failed = true;
    };
    worker.on("message", (m: ThreadMessage) => {
      if (m.type === "log") inSpanOf(m, () => opts.log?.(m.line));
      else if (m.type === "closed") closed();
      else if (m.type === "memory") memoryWaiters.shift()?.(m.memory);
      else if (m.type === "metrics") metricsWaiters.shift()?.(m.metrics);
      else if (m.type === "ready") {
        started = true;
        resolve(m.address);
      } else fail(new WorkerThreadError(`the Policy thread could not start: ${m.name}: ${m.message}`));
    });
    worker.on("error", (err) => fail(threadFailed("Policy", err)));
    worker.on("exit", (code) => {
      release();
      closed();
      fail(threadExited("Policy", code));
    });
  }).catch(async (err: unknown) => {
    closing = true;
    await worker.terminate();
    throw err;
  });
  return {
    address,
    eventLoopUtilization: (prev) => worker.performance.eventLoopUtilization(prev),
    memory() {
      if (closing) return Promise.reject(new WorkerThreadError("the Policy thread is closed"));
      return new Promise<ThreadMemory>((resolve) => {
        memoryWaiters.push(resolve);
        worker.postMessage("memory");
      });
    },
    metrics() {
      if (closing) return Promise.resolve([]);
      return new Promise<MetricsSnapshot>((resolve) => {
        metricsWaiters.push(resolve);
        worker.postMessage("metrics");
      });
    },
    async close() {
      if (closing) return;
      closing = true;
      worker.postMessage("close");
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closedMsg, new Promise((r) => (timer = setTimeout(r, CLOSE_GRACE_MS)))]);
      clearTimeout(timer);
      release();
      await worker.terminate();
    },
  };
}
