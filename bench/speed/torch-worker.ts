/**
 * The PyTorch side of the speed benchmark as a long-lived child process (bench/python/
 * speed_reference.py under Debian's /usr/bin/python3, where python3-torch lives), spoken to in
 * JSON lines. Why one process for the whole run: rlaif and PyTorch measurements can then
 * alternate one call at a time (machine noise hits both sides alike), torch is imported once,
 * and the thread count is switched per request (torch.set_num_threads + openblas_set_num_threads).
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** Debian's interpreter: python3-torch installs under it, not under a pyenv `python3` on PATH. */
export const PYTHON = "/usr/bin/python3";

const SCRIPT = join(import.meta.dirname, "..", "python", "speed_reference.py");

/** What the worker reports about itself. */
export interface TorchInfo {
  torch: string;
  numpy: string;
  /** `openblas_get_config()`, or null when the process has no OpenBLAS (a reference BLAS, ~15× slower). */
  openblas: string | null;
  psutil: boolean;
  /** libgomp's idle policy the worker runs with. */
  ompWaitPolicy: string;
}

/** A running worker; requests are answered in order, one at a time. */
export class TorchWorker {
  private readonly replies: AsyncIterator<string>;
  private queue: Promise<unknown> = Promise.resolve();
  private stderr = "";

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.replies = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    child.stderr.on("data", (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
  }

  /**
   * Starts the worker with `maxThreads` as the BLAS/OpenMP pool size (requests use 1..maxThreads)
   * and returns it with its self-description; throws, naming what to install, when torch is missing.
   * OpenMP's idle threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the caller's environment says
   * otherwise: on this 2-core machine shared with other work, libgomp's default spin-waiting made
   * the 2-thread Transformer step 3–5× slower (1.0–1.7 s against 0.26–0.37 s, measured).
   */
  static async start(maxThreads: number): Promise<{ worker: TorchWorker; info: TorchInfo }> {
    const threads = String(maxThreads);
    const wait = process.env.OMP_WAIT_POLICY || "PASSIVE";
    const env = {
      ...process.env,
      OMP_WAIT_POLICY: wait,
      OPENBLAS_NUM_THREADS: threads,
      OMP_NUM_THREADS: threads,
    };
    const child = spawn(PYTHON, [SCRIPT], {
      env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const worker = new TorchWorker(child);
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (e) => reject(new Error(`cannot run ${PYTHON}: ${e.message}`)));
    });
    const hello = await worker.call<Omit<TorchInfo, "ompWaitPolicy">>("hello").catch((e: Error) => {
      throw new Error(
        `${e.message}\nthe PyTorch side needs ${PYTHON} with torch and numpy: apt-get install python3-torch libopenblas0-pthread python3-numpy`,
      );
    });
    return { worker, info: { ...hello, ompWaitPolicy: wait } };
  }

  /** One request; resolves with the worker's answer, rejects with its error (naming the request). */
  call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const next = this.queue.then(async () => {
      this.child.stdin.write(`${JSON.stringify({ op, ...args })}\n`);
      const line = await this.replies.next();
      if (line.done) throw new Error(`PyTorch worker exited during '${op}': ${this.stderr.trim()}`);
      const reply = JSON.parse(line.value) as { ok: boolean; error?: string } & T;
      if (!reply.ok) throw new Error(`PyTorch worker, '${op}': ${reply.error}`);
      return reply;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Ends the worker (closing stdin ends its request loop). */
  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin.end();
    await exited;
  }
}
