/**
 * A circuit breaker for one scorer address (docs/feedback-contract.md#resilience). Why: a scorer
 * that keeps failing (hung, crashed, answering garbage) would otherwise cost every prompt job its
 * full retry schedule, so one bad scorer slows every step to a crawl. After `failures`
 * consecutive failed Score operations the circuit opens: callers are told at once, without a
 * call, until `coolDownMs` has passed; then one caller is let through as a probe (half-open), and
 * its outcome closes the circuit again or re-opens it for another cool-down. Opening and closing
 * are logged, so an operator sees when and why a scorer was taken out.
 */

import { CIRCUIT_OPEN } from "../core/src/errors.js";

/** The breaker's state, as in the classic pattern. */
export type CircuitState = "closed" | "open" | "half-open";

/** Breaker tuning. */
export interface CircuitBreakerOptions {
  /** Consecutive failed operations that open the circuit (≥ 1). */
  failures: number;
  /** How long an open circuit refuses calls before it lets one probe through. */
  coolDownMs: number;
  /** Names the scorer in the log lines and in {@link CircuitBreaker.refusal}. */
  name: string;
  log?: (line: string) => void;
  /** Clock in ms (tests pass a fake one). */
  now?: () => number;
}

/** Consecutive-failure circuit breaker: closed → open → half-open probe → closed or open. */
export class CircuitBreaker {
  private consecutive = 0;
  private openedAt = 0;
  private probing = false;
  private current: CircuitState = "closed";
  private lastFailure = "";
  private readonly now: () => number;

  constructor(private readonly opts: CircuitBreakerOptions) {
    this.now = opts.now ?? (() => performance.now());
  }

  /** The state now (an open circuit past its cool-down reads half-open). */
  get state(): CircuitState {
    if (this.current === "open" && this.now() - this.openedAt >= this.opts.coolDownMs) return "half-open";
    return this.current;
  }

  /**
   * Whether a call may be made now. An open circuit past its cool-down admits exactly one probe
   * (the caller must then report its outcome); every other caller is refused until it ends.
   */
  admit(): boolean {
    const state = this.state;
    if (state === "closed") return true;
    if (state === "half-open" && !this.probing) {
      this.probing = true;
      this.current = "half-open";
      this.opts.log?.(`rollout: scorer ${this.opts.name} circuit half-open: probing with one call`);
      return true;
    }
    return false;
  }

  /** Why a refused caller was refused, for the samples' error. */
  refusal(): string {
    return `scorer ${this.opts.name}: ${CIRCUIT_OPEN} after ${this.opts.failures} consecutive failures (last: ${this.lastFailure}); not called`;
  }

  /** An operation succeeded: the failure streak ends and an open or probing circuit closes. */
  success(): void {
    if (this.current !== "closed") {
      this.opts.log?.(`rollout: scorer ${this.opts.name} circuit closed: the probe call succeeded`);
    }
    this.current = "closed";
    this.consecutive = 0;
    this.probing = false;
  }

  /** An operation failed for `reason`: a failed probe, or the K-th failure in a row, opens the circuit. */
  failure(reason: string): void {
    this.lastFailure = reason;
    this.consecutive++;
    const probeFailed = this.probing;
    this.probing = false;
    if (probeFailed || (this.current === "closed" && this.consecutive >= this.opts.failures)) {
      this.current = "open";
      this.openedAt = this.now();
      this.opts.log?.(
        `rollout: scorer ${this.opts.name} circuit open for ${this.opts.coolDownMs} ms after ${
          probeFailed ? "a failed probe" : `${this.consecutive} consecutive failures`
        }: ${reason}`,
      );
    }
  }
}
