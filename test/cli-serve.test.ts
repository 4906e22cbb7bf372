/**
 * What `rlaif serve` and `rlaif train` check before they load anything (a port in use, a
 * FeedbackService that does not answer), and that `npx rlaif serve …` stops on SIGTERM.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkFeedback, checkPortFree } from "../services/cli/preflight.js";
import { ConfigError } from "../services/core/src/errors.js";
import { registerService } from "../services/core/src/grpc/adapter.js";
import { type RunningServer, startServer } from "../services/core/src/grpc/server.js";
import { FeedbackService, ruleFeedbackService } from "../services/feedback/feedback-service.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const ROOT = join(import.meta.dirname, "..");
const BIN = join(ROOT, "bin", "rlaif.js");

function rlaif(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like {@link rlaif}, without blocking this process (so servers in it keep answering). */
const rlaifAsync = (...args: string[]) => startRlaif(args).done;

/** A bare grpc-js server (no health service) on a free loopback port. */
async function bareServer(
  setup: (s: grpc.Server) => void,
): Promise<{ server: grpc.Server; address: string }> {
  const server = new grpc.Server();
  setup(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, address: `127.0.0.1:${port}` };
}

async function refusal(call: Promise<unknown>): Promise<string> {
  const err = await call.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return (err as Error).message;
}

describe("cli serve and preflight checks", () => {
  let checkpoint: string;
  let taken: Server;
  let takenPort: number;
  let feedback: RunningServer;
  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint();
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "0.0.0.0", r));
    takenPort = (taken.address() as { port: number }).port;
    feedback = await startFeedbackServer({ host: "127.0.0.1", port: 0 });
  });
  afterAll(async () => {
    taken?.close();
    await feedback?.shutdown(1000);
  });

  it("cli serve - a port in use exits 2 with one line saying what to do, before any model loads", () => {
    for (const args of [["policy", "--checkpoint", checkpoint], ["feedback"]]) {
      const r = rlaif("serve", ...args, "--port", String(takenPort));
      expect(r.code, r.stderr).toBe(2);
      const message = `port ${takenPort} is in use: choose another --port (0 picks a free one)`;
      expect(r.stderr.split(message)).toHaveLength(2);
      expect(r.stderr).not.toMatch(/No address added|EADDRINUSE|compute backend/);
    }
  });

  it("cli serve - checkPortFree passes a free port and port 0, and refuses a taken one", async () => {
    await expect(checkPortFree(0, "0.0.0.0")).resolves.toBeUndefined();
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const free = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await expect(checkPortFree(free, "127.0.0.1")).resolves.toBeUndefined();
    expect(await refusal(checkPortFree(takenPort, "0.0.0.0"))).toMatch(/is in use/);
  });

  it("cli train - an unreachable --feedback-address exits 2 naming the flag, before any service starts", () => {
    const r = rlaif("train", "--feedback-address", "127.0.0.1:1", "--checkpoint", checkpoint, "--steps", "1");
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(
      /^rlaif train: --feedback-address 127\.0\.0\.1:1: no FeedbackService answers there \(UNAVAILABLE: /,
    );
    expect(r.stderr).not.toMatch(/compute backend|retry|step 1/);
  });

  it("cli train - checkFeedback accepts a FeedbackService with or without the health service", async () => {
    await expect(checkFeedback(feedback.address, "--feedback-address")).resolves.toBeUndefined();
    const plain = await bareServer((s) => registerService(s, FeedbackService, ruleFeedbackService()));
    try {
      await expect(checkFeedback(plain.address, "--feedback-address")).resolves.toBeUndefined();
    } finally {
      plain.server.forceShutdown();
    }
  });

  it("cli train - checkFeedback refuses a gRPC server that is not a FeedbackService", async () => {
    const other = await startServer({ host: "127.0.0.1", port: 0, services: [] });
    const empty = await bareServer(() => {});
    try {
      expect(await refusal(checkFeedback(other.address, "--feedback-address"))).toBe(
        `--feedback-address ${other.address}: no FeedbackService answers there (a gRPC server answers but does not serve rlaif.feedback.v1.FeedbackService)`,
      );
      expect(await refusal(checkFeedback(empty.address, "--x"))).toMatch(
        /^--x 127\.0\.0\.1:\d+: no FeedbackService answers there \(a gRPC server answers but does not implement rlaif\.feedback\.v1\.FeedbackService\)$/,
      );
    } finally {
      await other.shutdown(100);
      empty.server.forceShutdown();
    }
  });

  it("cli train - a reachable --feedback-address passes the check and scores the run", async () => {
    const r = await rlaifAsync(
      ...["train", "--feedback-address", feedback.address, "--checkpoint", checkpoint, "--backend", "wasm"],
      ...["--steps", "1", "--prompts-per-step", "2", "--samples-per-prompt", "2", "--max-new-tokens", "4"],
      ...["--out", join(checkpoint, "..", "runs"), "--json"],
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split("\n").at(-1) as string).trajectories).toBe(4);
    // The held-out report scores with the built-in rule scorer: not for a run scored elsewhere.
    expect(r.stderr).toMatch(/^held-out report skipped: .*FeedbackService at 127\.0\.0\.1:\d+/m);
    expect(r.stderr).not.toMatch(/^held-out reward/m);
  });

  it("cli serve - SIGTERM to `npx rlaif serve` stops the server and frees its port", async () => {
    const npx: ChildProcess = spawn("npx", ["--yes", "rlaif", "serve", "feedback", "--port", "0"], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines = createInterface({ input: npx.stdout as NodeJS.ReadableStream });
    const [line] = (await Promise.race([
      once(lines, "line"),
      once(npx, "exit").then(() => {
        throw new Error("npx exited before the server listened");
      }),
    ])) as [string];
    const port = Number((/listening on \S+:(\d+)/.exec(line) as RegExpExecArray)[1]);
    await expect(checkPortFree(port, "0.0.0.0").catch((e: Error) => e.message)).resolves.toMatch(/is in use/);
    npx.kill("SIGTERM");
    await once(npx, "exit");
    // The server process (npx's grandchild) notices and shuts down; wait for it, up to a bound.
    let free = false;
    for (let i = 0; i < 100 && !free; i++) {
      free = await checkPortFree(port, "0.0.0.0").then(
        () => true,
        () => false,
      );
      if (!free) await new Promise((r) => setTimeout(r, 100));
    }
    expect(free, `port ${port} is still held after SIGTERM to npx`).toBe(true);
  }, 60_000);
});
