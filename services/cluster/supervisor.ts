/**
 * Keeps one child process of `rlaif up` running: when it exits without being asked to, the
 * supervisor logs which one and how (exit code or signal) and starts it again after a back-off
 * (0.5 s doubling to 10 s, back to 0.5 s once a start has stayed up a minute). Past a cap of
 * restarts within a minute it gives up and `failed` rejects with a ServiceFailedError naming
 * the service, so `rlaif up` stops with that message instead of restarting forever. Why a class
 * of its own: the cluster wiring (which flags, which port) stays apart from the restart rules,
 * and the rules can be tested with any process.
 */
import { ServiceFailedError } from "../core/src/errors.js";

/** How a process ended: its exit code, or the signal that ended it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** "exit code 1" or "signal SIGKILL", for log lines. */
export function describeExit(status: ExitStatus): string {
  return status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
}

/** One running instance of a supervised process. */
export interface ProcessInstance {
  readonly pid: number;
  /** Resolves when the process has exited, for whatever reason. */
  readonly exited: Promise<ExitStatus>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it exited. */
  stop(graceMs: number): Promise<ExitStatus>;
}

/** When and how often a process that died is started again. */
export interface RestartPolicy {
  /** Wait before the first restart after a stable run. */
  firstDelayMs: number;
  /** The wait doubles per restart up to this. */
  maxDelayMs: number;
  /** A start that stayed up this long resets the wait to `firstDelayMs`. */
  stableMs: number;
  /** Most restarts within `windowMs`; one more and the supervisor gives up. */
  maxRestarts: number;
  windowMs: number;
}

/**
 * 0.5 s doubling to 10 s, reset after a minute up; at most 5 restarts a minute. Why these: a
 * process killed once (OOM, a node drain) is back within a second, while one that dies at every
 * start (a bad flag, a port taken for good) is given up on within ~16 s of waits instead of
 * filling the log for ever.
 */
export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  firstDelayMs: 500,
  maxDelayMs: 10_000,
  stableMs: 60_000,
  maxRestarts: 5,
  windowMs: 60_000,
};

/** An unexpected exit, as last seen. */
export interface ExitRecord {
  pid: number;
  status: ExitStatus;
  uptimeMs: number;
}

/** What to supervise. */
export interface SupervisorOptions<P extends ProcessInstance> {
  /** The name in log lines and errors ("optimizer", "nats-server"). */
  name: string;
  /** Start an instance; `restart` is 0 for the first start, then 1, 2, … */
  start(restart: number): Promise<P>;
  log(line: string): void;
  policy?: Partial<RestartPolicy>;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Restarts one process whenever it exits unexpectedly; see the module comment. */
export class Supervisor<P extends ProcessInstance> {
  /** Rejects with ServiceFailedError once the restart cap is exceeded; never resolves. */
  readonly failed: Promise<never>;
  private instance: P;
  private startedAt = Date.now();
  private state: "up" | "restarting" | "stopping" | "failed" = "up";
  private last: ExitRecord | null = null;
  private restartTimes: number[] = [];
  private restarts = 0;
  private delayMs: number;
  private graceMs = 0;
  private wake: (() => void) | null = null;
  private reject: (err: ServiceFailedError) => void = () => undefined;
  private readonly loop: Promise<void>;
  private readonly policy: RestartPolicy;

  private constructor(
    private readonly opts: SupervisorOptions<P>,
    first: P,
  ) {
    this.policy = { ...DEFAULT_RESTART_POLICY, ...opts.policy };
    this.delayMs = this.policy.firstDelayMs;
    this.instance = first;
    this.failed = new Promise<never>((_, reject) => {
      this.reject = reject;
    });
    // Whoever races on it handles it; the supervisor itself must not leave it unhandled.
    this.failed.catch(() => undefined);
    this.loop = this.supervise();
  }

  /** Start the first instance (a failure rejects, nothing is retried) and supervise it. */
  static async start<P extends ProcessInstance>(opts: SupervisorOptions<P>): Promise<Supervisor<P>> {
    return new Supervisor(opts, await opts.start(0));
  }

  /** The current instance (the latest start; it may have exited and be about to restart). */
  get current(): P {
    return this.instance;
  }

  /** Process id of the current instance. */
  get pid(): number {
    return this.instance.pid;
  }

  /**
   * The last unexpected exit, when the process is down or restarting now; waits up to `ms` for
   * the exit to be seen when the process still looks up (a dropped connection is often noticed
   * a moment before the exit). Null when it is up.
   */
  async downSince(ms: number): Promise<ExitRecord | null> {
    if (this.state === "up") {
      let timer: NodeJS.Timeout | undefined;
      const wait = new Promise<void>((r) => {
        timer = setTimeout(r, ms);
      });
      await Promise.race([this.instance.exited, wait]);
      clearTimeout(timer);
    }
    return this.state === "up" ? null : this.last;
  }

  /**
   * Stop supervising and stop the process (SIGTERM, SIGKILL after `graceMs`); a restart under
   * way is called off, or its instance stopped. Resolves with how the running instance exited
   * (null when none was running).
   */
  async stop(graceMs: number): Promise<ExitStatus | null> {
    const running = this.state === "up" ? this.instance : null;
    this.state = "stopping";
    this.graceMs = graceMs;
    this.wake?.();
    const status = running ? await running.stop(graceMs) : null;
    await this.loop;
    return status;
  }

  private get stopping(): boolean {
    return this.state === "stopping";
  }

  private async supervise(): Promise<void> {
    for (;;) {
      const { pid } = this.instance;
      const status = await this.instance.exited;
      if (this.stopping) return;
      const uptimeMs = Date.now() - this.startedAt;
      this.last = { pid, status, uptimeMs };
      this.state = "restarting";
      if (uptimeMs >= this.policy.stableMs) this.delayMs = this.policy.firstDelayMs;
      const exit = `${this.opts.name} (pid ${pid}) exited unexpectedly (${describeExit(status)}) after ${seconds(uptimeMs)}`;
      if (this.capReached()) {
        this.opts.log(exit);
        this.giveUp(undefined);
        return;
      }
      this.opts.log(`${exit}; restarting in ${seconds(this.delayMs)}`);
      const next = await this.restart();
      if (!next) return;
      this.instance = next;
      this.startedAt = Date.now();
      this.state = "up";
      this.opts.log(`${this.opts.name} restarted (pid ${next.pid}, restart ${this.restarts})`);
    }
  }

  /** Start a new instance after the back-off, retrying failed starts; null when stopped or given up. */
  private async restart(): Promise<P | null> {
    let lastError: unknown;
    for (;;) {
      if (this.capReached()) {
        this.giveUp(lastError);
        return null;
      }
      await this.sleep(this.delayMs);
      if (this.stopping) return null;
      this.restartTimes.push(Date.now());
      this.delayMs = Math.min(this.delayMs * 2, this.policy.maxDelayMs);
      this.restarts++;
      try {
        const next = await this.opts.start(this.restarts);
        if (!this.stopping) return next;
        await next.stop(this.graceMs);
        return null;
      } catch (err) {
        if (this.stopping) return null;
        lastError = err;
        this.opts.log(
          `${this.opts.name}: restart ${this.restarts} failed: ${(err as Error).message}; next try in ${seconds(this.delayMs)}`,
        );
      }
    }
  }

  /** Whether the restarts within the window have reached the cap (older ones forgotten). */
  private capReached(): boolean {
    const now = Date.now();
    this.restartTimes = this.restartTimes.filter((t) => now - t < this.policy.windowMs);
    return this.restartTimes.length >= this.policy.maxRestarts;
  }

  private giveUp(lastError: unknown): void {
    this.state = "failed";
    const { maxRestarts, windowMs } = this.policy;
    const how = this.last ? describeExit(this.last.status) : "unknown";
    const why = lastError instanceof Error ? `; the last restart failed: ${lastError.message}` : "";
    this.reject(
      new ServiceFailedError(
        this.opts.name,
        `${this.opts.name} keeps exiting: ${maxRestarts} restarts within ${windowMs / 1000} s (last: ${how})${why}; giving up (its log lines above say why)`,
        lastError === undefined ? undefined : { cause: lastError },
      ),
    );
    this.opts.log(`${this.opts.name}: giving up after ${maxRestarts} restarts within ${windowMs / 1000} s`);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
