/**
 * `rlaif feedback-check` (services/cli/feedback-conformance.ts): every row passes against the
 * built-in rule service and the Python example, and the right rows fail against misbehaving
 * servers started here: one that hangs, one answering NaN, one with the wrong count, one that
 * keeps working through abandoned calls, one whose process exits mid-call. Exit codes 0 / 1 / 2 through the CLI.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, describe, expect, it } from "vitest";
import { type CheckRow, runFeedbackChecks } from "../services/cli/feedback-conformance.js";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import type { ServiceImpl } from "../services/core/src/grpc/adapter.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { implement, type RunningServer, startServer } from "../services/core/src/grpc/server.js";
import { ruleFeedbackService } from "../services/feedback/feedback-service.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { PYTHON, requireTool, TOOLS } from "./helpers/require-tool.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";

const hasGrpcPython = requireTool(TOOLS.pythonGrpc);

/** The suite's rows against `address`, each call under `timeoutMs`. */
async function check(address: string, timeoutMs = 5000): Promise<Map<string, CheckRow>> {
  const client = createClient(FeedbackService, address, { defaultTimeoutMs: timeoutMs });
  try {
    const rows = await runFeedbackChecks(client, timeoutMs);
    return new Map(rows.map((r) => [r.name.replace(/ \(.*/, ""), r]));
  } finally {
    client.close();
  }
}

/** A server with the rule service's handlers, `score` replaced. */
async function misbehaving(score: ServiceImpl<typeof FeedbackService>["score"]): Promise<RunningServer> {
  const rules = ruleFeedbackService();
  return startServer({
    host: "127.0.0.1",
    port: 0,
    services: [implement(FeedbackService, { ...rules, score })],
  });
}

/** A child that prints "listening on ADDR" and serves there; resolves with its address. */
async function listeningChild(child: ChildProcess, what: string): Promise<string> {
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const [line] = (await Promise.race([
    once(lines, "line"),
    once(child, "exit").then(() => {
      throw new Error(`${what} exited before listening`);
    }),
  ])) as [string];
  return (/listening on (\S+)/.exec(line) as RegExpExecArray)[1] as string;
}

const failing = (rows: Map<string, CheckRow>) => [...rows.values()].filter((r) => !r.pass).map((r) => r.name);

describe("feedback check", () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) c.kill();
  });

  it("feedback check - every row passes against the built-in rule service, and the CLI exits 0", async () => {
    const server = await startFeedbackServer({ host: "127.0.0.1", port: 0 });
    try {
      const rows = await check(server.address);
      expect(failing(rows)).toEqual([]);
      expect([...rows.keys()]).toEqual([
        "getinfo",
        "score-shape",
        "reward-range",
        "provenance",
        "idempotency",
        "empty-items",
        "oversize-text",
        "batch-limit",
        "deadline",
      ]);
      const cli = await startRlaif(["feedback-check", server.address, "--json"]).done;
      expect(cli.code).toBe(0);
      const out = JSON.parse(cli.stdout.trim()) as { rows: CheckRow[] };
      expect(out.rows.every((r) => r.pass)).toBe(true);
    } finally {
      await server.shutdown(1000);
    }
  }, 60_000);

  it("feedback check - a NaN reward fails score-shape naming the reward, and the CLI exits 1", async () => {
    const server = await misbehaving((req) => ({
      scorerId: "nan",
      scores: req.items.map(() => ({ reward: Number.NaN })),
    }));
    try {
      const rows = await check(server.address);
      expect(rows.get("score-shape")?.pass).toBe(false);
      expect(rows.get("score-shape")?.reason).toMatch(/reward: must be finite, got NaN/);
      expect(rows.get("getinfo")?.pass).toBe(true);
      const cli = await startRlaif(["feedback-check", server.address]).done;
      expect(cli.code).toBe(1);
      expect(cli.stdout).toMatch(/^FAIL {2}score-shape/m);
      expect(cli.stderr).toMatch(/checks failed/);
    } finally {
      await server.shutdown(1000);
    }
  }, 60_000);

  it("feedback check - one score too few fails score-shape", async () => {
    const server = await misbehaving((req) => ({
      scorerId: "short",
      scores: req.items.slice(1).map(() => ({ reward: 0.5 })),
    }));
    try {
      const rows = await check(server.address);
      expect(rows.get("score-shape")?.pass).toBe(false);
      expect(rows.get("score-shape")?.reason).toMatch(/^scores: .*3/);
      expect(rows.get("empty-items")?.pass).toBe(true);
    } finally {
      await server.shutdown(1000);
    }
  }, 60_000);

  it("feedback check - a scorer that hangs fails its rows by DEADLINE_EXCEEDED and the suite ends", async () => {
    const server = await misbehaving(() => new Promise(() => {}));
    try {
      const rows = await check(server.address, 300);
      for (const name of ["score-shape", "idempotency"]) {
        expect(rows.get(name)?.pass).toBe(false);
        expect(rows.get(name)?.reason).toMatch(/DEADLINE_EXCEEDED/);
      }
      expect(rows.get("getinfo")?.pass).toBe(true);
      expect(rows.get("deadline")?.pass).toBe(false);
      expect(rows.get("deadline")?.reason).toMatch(/the next call failed: .*DEADLINE_EXCEEDED/);
    } finally {
      await server.shutdown(100);
    }
  }, 60_000);

  it("feedback check - a scorer that keeps working through abandoned calls fails the deadline row only", async () => {
    // One call at a time, 250 ms each, whether or not its caller is still waiting: the four
    // calls the row abandons queue a second of work ahead of the one it then waits for.
    let queue = Promise.resolve();
    const rules = ruleFeedbackService();
    const server = await misbehaving((req, ctx) => {
      const turn = queue.then(() => new Promise<void>((resolve) => setTimeout(resolve, 250)));
      queue = turn;
      return turn.then(() => rules.score(req, ctx));
    });
    try {
      const rows = await check(server.address, 800);
      expect(rows.get("score-shape")?.pass).toBe(true);
      expect(rows.get("idempotency")?.pass).toBe(true);
      expect(rows.get("deadline")?.pass).toBe(false);
      expect(rows.get("deadline")?.reason).toMatch(
        /after 4 calls abandoned at 20 ms the next call failed: .*DEADLINE_EXCEEDED/,
      );
    } finally {
      await server.shutdown(100);
    }
  }, 60_000);

  it("feedback check - a scorer whose process exits mid-call fails score-shape, not hangs", async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "helpers", "crashing-feedback.ts")],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    children.push(child);
    const address = await listeningChild(child, "the crashing feedback server");
    const rows = await check(address, 3000);
    expect(rows.get("getinfo")?.pass).toBe(true);
    expect(rows.get("score-shape")?.pass).toBe(false);
    expect(rows.get("score-shape")?.reason).toMatch(/UNAVAILABLE|CANCELLED|INTERNAL/);
  }, 60_000);

  it("feedback check - an address where nothing listens or a bad flag exits 2 with the reason", async () => {
    const none = await startRlaif(["feedback-check", "127.0.0.1:1"]).done;
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no gRPC server answers at 127\.0\.0\.1:1/);
    const badAddress = await startRlaif(["feedback-check", "localhost"]).done;
    expect(badAddress.code).toBe(2);
    expect(badAddress.stderr).toMatch(/host:port/);
    const badTimeout = await startRlaif(["feedback-check", "127.0.0.1:1", "--timeout-ms", "0"]).done;
    expect(badTimeout.code).toBe(2);
    expect(badTimeout.stderr).toMatch(/--timeout-ms/);
  }, 60_000);
});

describe.skipIf(!hasGrpcPython)("feedback check(python)", () => {
  it("feedback check(python) - every row passes against the Python example", async () => {
    const server = join(import.meta.dirname, "..", "examples", "python-feedback", "server.py");
    const child = spawn(PYTHON, [server, "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const address = await listeningChild(child, "the Python feedback server");
      const rows = await check(address);
      expect([...rows.values()].filter((r) => !r.pass)).toEqual([]);
    } finally {
      child.kill();
    }
  }, 60_000);
});
