/**
 * Control-RPC tokens: with a token set, StartRun, CancelRun, Checkpoint, PauseRun and UnpauseRun
 * answer UNAUTHENTICATED without it or with a wrong one, before any handler runs; the read-only
 * RPCs stay open; the CLI sends the token it is given (and says what to pass when it has none).
 * The Optimizer here is a recording stand-in, so the test checks the guard, not training.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectOptimizer, explainRefusal, type OptimizerAccess } from "../services/cli/remote-run.js";
import { OptimizerService, RunState } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { ConfigError, RpcError } from "../services/core/src/errors.js";
import { CONTROL_RPCS, resolveControlToken } from "../services/core/src/grpc/control-token.js";
import { type RunningServer, startServer } from "../services/core/src/grpc/server.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";

const TOKEN = "s3cret-token-of-the-test";

describe("control token", () => {
  let server: RunningServer;
  let dir: string;
  /** Control handlers that ran, by name: a refused call must never reach one. */
  const ran: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rlaif-token-"));
    /** A control handler that records that it ran and answers `res`. */
    const control =
      <T>(name: string, res: T) =>
      async (): Promise<T> => {
        ran.push(name);
        return res;
      };
    const impl = {
      startRun: control("startRun", { runId: "r1" }),
      cancelRun: control("cancelRun", { state: RunState.CANCELLED, step: 3 }),
      checkpoint: control("checkpoint", {}),
      pauseRun: control("pauseRun", {}),
      unpauseRun: control("unpauseRun", {}),
      getStatus: async () => ({ runId: "r1", state: RunState.RUNNING, step: 3 }),
      listRuns: async () => ({ runs: [] }),
    };
    server = await startServer({
      port: 0,
      services: [{ service: OptimizerService, impl }],
      security: { mode: "plaintext", controlToken: TOKEN },
    });
  });
  afterAll(async () => {
    await server?.shutdown(500);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The status code of `call`, or "OK". */
  async function codeOf(call: Promise<unknown>): Promise<string> {
    try {
      await call;
      return "OK";
    } catch (err) {
      if (err instanceof RpcError) return grpc.status[err.code] as string;
      throw err;
    }
  }

  it("control token - the guarded RPCs are the five control RPCs of OptimizerService", () => {
    expect([...CONTROL_RPCS].sort()).toEqual(
      ["CancelRun", "Checkpoint", "PauseRun", "StartRun", "UnpauseRun"].map(
        (m) => `/rlaif.optimizer.v1.OptimizerService/${m}`,
      ),
    );
  });

  it("control token - control RPCs without the token or with a wrong one are UNAUTHENTICATED and never run", async () => {
    const refused: OptimizerAccess[] = [{}, { controlToken: "wrong" }, { controlToken: `${TOKEN}x` }];
    for (const access of refused) {
      const optimizer = connectOptimizer(server.address, 5000, access);
      try {
        expect(await codeOf(optimizer.startRun({ config: { steps: 1 } }))).toBe("UNAUTHENTICATED");
        expect(await codeOf(optimizer.cancelRun({ runId: "r1" }))).toBe("UNAUTHENTICATED");
        expect(await codeOf(optimizer.checkpoint({ runId: "r1" }))).toBe("UNAUTHENTICATED");
        expect(await codeOf(optimizer.pauseRun({ runId: "r1" }))).toBe("UNAUTHENTICATED");
        expect(await codeOf(optimizer.unpauseRun({ runId: "r1" }))).toBe("UNAUTHENTICATED");
        // Read-only RPCs need no token.
        expect((await optimizer.getStatus({ runId: "" })).step).toBe(3);
        expect((await optimizer.listRuns({})).runs).toEqual([]);
      } finally {
        optimizer.close();
      }
    }
    expect(ran).toEqual([]);
    const bare = connectOptimizer(server.address, 5000);
    const noToken = await bare.startRun({ config: {} }).catch((e: unknown) => e);
    bare.close();
    const explained = explainRefusal(noToken);
    expect(explained).toBeInstanceOf(ConfigError);
    expect((explained as Error).message).toMatch(
      /StartRun: this call needs metadata authorization.*--control-token-file/,
    );
  });

  it("control token - with the token every control RPC runs", async () => {
    const optimizer = connectOptimizer(server.address, 5000, { controlToken: TOKEN });
    try {
      expect((await optimizer.startRun({ config: { steps: 1 } })).runId).toBe("r1");
      await optimizer.cancelRun({ runId: "r1" });
      await optimizer.checkpoint({ runId: "r1" });
      await optimizer.pauseRun({ runId: "r1" });
      await optimizer.unpauseRun({ runId: "r1" });
    } finally {
      optimizer.close();
    }
    expect(ran).toEqual(["startRun", "cancelRun", "checkpoint", "pauseRun", "unpauseRun"]);
  });

  it("control token - the setting wins over the file, the file over RLAIF_CONTROL_TOKEN; a bad file is refused", () => {
    const file = join(dir, "token");
    writeFileSync(file, "from-file\nignored\n");
    const env = { RLAIF_CONTROL_TOKEN: "from-env" };
    expect(resolveControlToken({ controlToken: "flag", controlTokenFile: file }, env)).toBe("flag");
    expect(resolveControlToken({ controlToken: "", controlTokenFile: file }, env)).toBe("from-file");
    expect(resolveControlToken({ controlToken: "", controlTokenFile: "" }, env)).toBe("from-env");
    expect(resolveControlToken({ controlToken: "", controlTokenFile: "" }, {})).toBeUndefined();
    writeFileSync(file, "\n");
    expect(() => resolveControlToken({ controlToken: "", controlTokenFile: file }, env)).toThrow(
      /services.controlTokenFile .*: holds no token/,
    );
  });

  it("control token - rlaif cancel sends the token from --control-token-file, and without one exits 2 saying what to pass", async () => {
    const file = join(dir, "cli-token");
    writeFileSync(file, `${TOKEN}\n`);
    const without = await startRlaif(["cancel", "--optimizer", server.address, "r1"], {
      RLAIF_CONTROL_TOKEN: "",
    }).done;
    expect(without.code, without.stderr).toBe(2);
    expect(without.stderr).toMatch(
      /CancelRun: this call needs metadata authorization: Bearer <control token>/,
    );
    const withToken = await startRlaif([
      "cancel",
      "--optimizer",
      server.address,
      "--control-token-file",
      file,
      "r1",
    ]).done;
    expect(withToken.code, withToken.stderr).toBe(0);
    expect(withToken.stdout).toMatch(/^run r1: CANCELLED at step 3;/);
  }, 60_000);
});
