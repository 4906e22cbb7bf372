/**
 * What runs inside the learner's worker thread (started by learner-thread.ts): its own
 * TensorFlow.js backend and one ReinforceLearner, answering the main thread's calls in order. It
 * says `ready` (or `failed`, with the error) once the learner is loaded.
 */
import { parentPort, workerData } from "node:worker_threads";
import { startBackend } from "../core/src/model/backend.js";
import { threadMemory } from "../core/src/thread/memory-probe.js";
import { errorToWire, serveCalls } from "../core/src/thread/worker-rpc.js";
import {
  decodeStepArg,
  LEARNER_CALLS,
  type LearnerThreadInit,
  type LearnerThreadReady,
  type SaveArgs,
} from "./learner-thread.js";
import { ReinforceLearner } from "./reinforce-learner.js";

const port = parentPort;
if (!port) throw new Error("learner-thread-entry.ts runs only as a worker thread (see learner-thread.ts)");
const init = workerData as LearnerThreadInit;
const send = (m: LearnerThreadReady) => port.postMessage(m);

try {
  const backend = await startBackend(init.backend);
  const learner = await ReinforceLearner.fromCheckpoint(init.checkpoint, init.settings, {
    resume: init.resume,
  });
  serveCalls(port, {
    [LEARNER_CALLS.step]: async (arg: Uint8Array[]) => ({ value: await learner.step(decodeStepArg(arg)) }),
    [LEARNER_CALLS.weights]: async () => {
      const blob = await learner.weightsBlob();
      return { value: blob, transfer: [blob.buffer as ArrayBuffer] };
    },
    [LEARNER_CALLS.memory]: async () => ({ value: threadMemory() }),
    [LEARNER_CALLS.save]: async (arg: SaveArgs) => ({
      value: await learner.saveCheckpoint(
        arg.path,
        arg.metadata,
        arg.tensors ? { tensors: arg.tensors } : undefined,
      ),
    }),
  });
  send({
    type: "ready",
    modelKind: learner.modelKind,
    contextLength: learner.contextLength,
    tokenizer: learner.tokenizer,
    backend,
  });
} catch (err) {
  send({ type: "failed", error: errorToWire(err) });
}
