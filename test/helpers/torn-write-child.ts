/**
 * Child process of the "kill during checkpoint writing" test. It rewrites the checkpoint at
 * argv[2] with new metadata through the real saveCheckpoint, but the file write stops halfway:
 * half the bytes reach the temp file, "torn" is printed, and the process hangs so the parent can
 * SIGKILL it at exactly that point (no cleanup code runs, as in a real kill).
 */
import { open } from "node:fs/promises";
import { loadCheckpoint, saveCheckpoint } from "../../services/core/src/model/checkpoint.js";

const path = process.argv[2] as string;
const previous = await loadCheckpoint(path);
const probe = await open(process.execPath, "r");
const proto = Object.getPrototypeOf(probe) as { writeFile: (data: Uint8Array) => Promise<void> };
await probe.close();
proto.writeFile = async function (
  this: { write(d: Uint8Array): Promise<unknown>; sync(): Promise<void> },
  data,
) {
  await this.write(data.subarray(0, data.length >> 1));
  await this.sync();
  process.stdout.write("torn\n");
  await new Promise(() => undefined);
};
await saveCheckpoint(path, { ...previous, metadata: { ...previous.metadata, step: "999" } });
