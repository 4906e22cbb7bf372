/**
 * `rlaif serve policy --openai-port`: the process serves the OpenAI HTTP API next to gRPC, with
 * the token from a file; a taken HTTP port or an unreadable token file exits 2 naming the flag,
 * before any model loads.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRlaif } from "./helpers/spawn-rlaif.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

/** A port free right now (bound and closed again). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe("cli serve policy --openai-port", () => {
  let checkpoint: string;
  let tokenFile: string;
  let taken: Server;
  let takenPort: number;

  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint();
    tokenFile = join(mkdtempSync(join(tmpdir(), "rlaif-openai-")), "token");
    writeFileSync(tokenFile, "s3cret\n");
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    takenPort = (taken.address() as { port: number }).port;
  });
  afterAll(() => {
    taken?.close();
  });

  it("cli serve - the Policy answers OpenAI calls on --openai-port with the token file's token, and drains on SIGTERM", async () => {
    const port = await freePort();
    const run = startRlaif([
      "serve",
      "policy",
      "--checkpoint",
      checkpoint,
      "--backend",
      "wasm",
      "--port",
      "0",
      "--openai-port",
      String(port),
      "--openai-token-file",
      tokenFile,
    ]);
    const line = `OpenAI-compatible API on http://127.0.0.1:${port}/v1 (bearer token required)`;
    for (let i = 0; i < 600 && !run.stderr().includes(line); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(run.stderr()).toContain(line);
    const base = `http://127.0.0.1:${port}/v1`;
    const models = await fetch(`${base}/models`, { headers: { authorization: "Bearer s3cret" } });
    expect(models.status).toBe(200);
    expect(((await models.json()) as { data: { id: string }[] }).data[0]?.id).toBe("rlaif-policy");
    expect((await fetch(`${base}/models`)).status).toBe(401);
    run.child.kill("SIGTERM");
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
  });

  it("cli serve - a taken --openai-port or an unreadable --openai-token-file exits 2 naming it, before the model loads", async () => {
    const common = ["serve", "policy", "--checkpoint", checkpoint, "--backend", "wasm", "--port", "0"];
    const inUse = await startRlaif([...common, "--openai-port", String(takenPort)]).done;
    expect(inUse.code, inUse.stderr).toBe(2);
    expect(inUse.stderr).toContain(`port ${takenPort} is in use: choose another --openai-port`);
    expect(inUse.stderr).not.toMatch(/compute backend/);
    const noFile = await startRlaif([
      ...common,
      "--openai-port",
      String(await freePort()),
      "--openai-token-file",
      join(tmpdir(), "no-such-rlaif-token"),
    ]).done;
    expect(noFile.code, noFile.stderr).toBe(2);
    expect(noFile.stderr).toMatch(/services\.openaiTokenFile .*no-such-rlaif-token/);
  });
});
