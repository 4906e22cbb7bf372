/**
 * `rlaif serve <service> --metrics-port`: the process serves /metrics and /healthz next to gRPC
 * and closes them on SIGTERM; a taken metrics port exits 2 naming the flag before it serves.
 */
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../services/core/src/bus/nats-server.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";

describe("cli serve --metrics-port", () => {
  let taken: Server;
  let takenPort: number;
  beforeAll(async () => {
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    takenPort = (taken.address() as { port: number }).port;
  });
  afterAll(() => {
    taken?.close();
  });

  it("cli serve - feedback serves /metrics and /healthz on --metrics-port, and drains on SIGTERM", async () => {
    const port = await freePort();
    const run = startRlaif(["serve", "feedback", "--port", "0", "--metrics-port", String(port)]);
    const line = `feedback: metrics on http://127.0.0.1:${port}/metrics`;
    for (let i = 0; i < 300 && !run.stderr().includes(line); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(run.stderr()).toContain(line);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect([health.status, await health.text()]).toEqual([200, "ok\n"]);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    // Nothing scored yet: the process exports no optimizer, policy or rollout series.
    expect(metrics).not.toMatch(/rlaif_(optimizer|policy|rollout)_/);
    run.child.kill("SIGTERM");
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
  });

  it("cli serve - a taken --metrics-port exits 2 naming it", async () => {
    const r = await startRlaif(["serve", "feedback", "--port", "0", "--metrics-port", String(takenPort)])
      .done;
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`port ${takenPort} is in use: choose another --metrics-port`);
  });
});
