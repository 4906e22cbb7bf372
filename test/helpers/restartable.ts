/**
 * A child process a fault test can kill -9 and start again with the same command line (same
 * port, same store), keeping every line it printed across its lives and noting any exit the test
 * did not cause (a crash, e.g. from an unhandled rejection).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

/** How a life of the process ended without the test asking. */
export interface UnexpectedExit {
  code: number | null;
  signal: string | null;
}

/** One restartable process; `start()` resolves when a line matches `ready`. */
export class Restartable {
  /** Every stdout and stderr line of every life, in arrival order. */
  readonly lines: string[] = [];
  /** Exits the test did not cause. */
  readonly crashes: UnexpectedExit[] = [];
  private child: ChildProcess | null = null;
  private expectingExit = false;

  constructor(
    readonly name: string,
    private readonly command: string,
    private readonly args: readonly string[],
    private readonly ready: RegExp,
  ) {}

  /** Start a new life and wait until it says it is ready (or fail with its last lines). */
  async start(timeoutMs = 120_000): Promise<void> {
    if (this.alive()) throw new Error(`${this.name} is already running`);
    const child = spawn(this.command, [...this.args], { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.expectingExit = false;
    let settled = false;
    await new Promise<void>((resolve, reject) => {
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const onLine = (line: string) => {
        this.lines.push(line);
        if (this.ready.test(line)) finish();
      };
      for (const stream of [child.stdout, child.stderr]) {
        if (stream) createInterface({ input: stream }).on("line", onLine);
      }
      const timer = setTimeout(
        () => finish(new Error(`${this.name} was not ready within ${timeoutMs} ms:\n${this.tail()}`)),
        timeoutMs,
      );
      child.once("exit", (code, signal) => {
        if (!this.expectingExit) this.crashes.push({ code, signal });
        finish(
          new Error(`${this.name} exited (${signal ?? `code ${code}`}) before it was ready:\n${this.tail()}`),
        );
      });
    });
  }

  /** SIGKILL the current life and wait for it to be gone. */
  async kill9(): Promise<void> {
    await this.end("SIGKILL");
  }

  /** SIGTERM (SIGKILL after 10 s); for cleanup. */
  async stop(): Promise<void> {
    await this.end("SIGTERM");
  }

  /** The process id of the current life. */
  get pid(): number | undefined {
    return this.alive() ? this.child?.pid : undefined;
  }

  /** The last `n` lines, for failure messages. */
  tail(n = 30): string {
    return this.lines.slice(-n).join("\n");
  }

  private alive(): boolean {
    const c = this.child;
    return c !== null && c.exitCode === null && c.signalCode === null;
  }

  private async end(signal: "SIGKILL" | "SIGTERM"): Promise<void> {
    const c = this.child;
    if (!c || !this.alive()) return;
    this.expectingExit = true;
    const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    c.kill(signal);
    const timer = signal === "SIGTERM" ? setTimeout(() => c.kill("SIGKILL"), 10_000) : undefined;
    await exited;
    clearTimeout(timer);
  }
}
