/**
 * The cold-start phase lines (services/core/src/ops/start-phases.ts): what a service logs is what
 * bench/cold-start.ts parses back, in text and inside a JSON log object, and other lines are none.
 */
import { describe, expect, it } from "vitest";
import {
  bootstrapPhaseLine,
  epochNowMs,
  parseStartPhase,
  startPhaseLine,
} from "../services/core/src/ops/start-phases.js";
import { formatLine } from "../services/core/src/telemetry/log-format.js";

describe("start phases", () => {
  it("start phases - a phase line parses back to its service, phase and instant", () => {
    const at = epochNowMs();
    const line = startPhaseLine("policy", "weights", at);
    expect(line).toMatch(/^policy: start phase weights at \d+\.\d \(\d+\.\d ms since process start\)$/);
    const mark = parseStartPhase(line);
    expect(mark?.service).toBe("policy");
    expect(mark?.phase).toBe("weights");
    expect(Math.abs((mark?.atEpochMs ?? 0) - at)).toBeLessThanOrEqual(0.05);
  });

  it("start phases - the line is found inside a JSON log object too", () => {
    const json = formatLine("json", "feedback", startPhaseLine("feedback", "serving"), new Date());
    expect(parseStartPhase(json)?.phase).toBe("serving");
  });

  it("start phases - the node phase lies between the process start and now", () => {
    const mark = parseStartPhase(bootstrapPhaseLine("rollout"));
    expect(mark?.phase).toBe("node");
    expect(mark?.atEpochMs).toBeGreaterThan(performance.timeOrigin);
    expect(mark?.atEpochMs).toBeLessThan(epochNowMs());
  });

  it("start phases - other lines and unknown phases are not phases", () => {
    expect(parseStartPhase("policy: compute backend wasm+blas")).toBeUndefined();
    expect(parseStartPhase("policy: start phase lunch at 12.5 (1.0 ms since process start)")).toBeUndefined();
  });
});
