/**
 * gRPC TLS and mTLS with certificates made here by `openssl` (test/helpers/test-certs.ts): a
 * client that trusts the CA is answered, a plaintext client, a client that does not trust the
 * server, and under mTLS a client without a certificate or with one from another CA are refused.
 * `rlaif serve` listens on 127.0.0.1 by default and says which protection it serves.
 */
import { rmSync } from "node:fs";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FeedbackService } from "../services/core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError, RpcError } from "../services/core/src/errors.js";
import { checkHealth, createClient } from "../services/core/src/grpc/client.js";
import { grpcSecurity, type TlsFiles, transportLine } from "../services/core/src/grpc/credentials.js";
import type { RunningServer } from "../services/core/src/grpc/server.js";
import { startFeedbackServer } from "../services/feedback/main.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";
import { makeTestCerts, type TestCerts } from "./helpers/test-certs.js";

const hasOpenssl = requireTool(TOOLS.openssl);

const NONE: TlsFiles = { tlsCert: "", tlsKey: "", tlsCa: "", tlsClientAuth: "none" };

/** The status code a health check gets, or "SERVING". */
async function health(address: string, credentials?: grpc.ChannelCredentials): Promise<string> {
  try {
    return await checkHealth(address, "", 3000, credentials ?? grpc.credentials.createInsecure());
  } catch (err) {
    if (err instanceof RpcError) return grpc.status[err.code] as string;
    throw err;
  }
}

/** Resolves once `p` has printed `text` on stderr; rejects after 10 s with what it printed. */
async function printed(p: { stderr: () => string }, text: string): Promise<void> {
  for (let waited = 0; !p.stderr().includes(text); waited += 20) {
    if (waited > 10_000) throw new Error(`no "${text}" on stderr:\n${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!hasOpenssl)("grpc tls", () => {
  let certs: TestCerts;
  const servers: RunningServer[] = [];
  /** Client credentials trusting the test CA, optionally with a client certificate. */
  const client = (files: Partial<TlsFiles>) => grpcSecurity({ ...NONE, ...files }).client;

  beforeAll(() => {
    certs = makeTestCerts();
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.shutdown(500)));
    if (certs) rmSync(certs.dir, { recursive: true, force: true });
  });

  async function serve(files: Partial<TlsFiles>): Promise<RunningServer> {
    const security = grpcSecurity({ ...NONE, ...files });
    const server = await startFeedbackServer({ host: "127.0.0.1", port: 0, security });
    servers.push(server);
    return server;
  }

  it("grpc tls - a TLS server answers a client that trusts its CA, by IP and by name; plaintext is refused", async () => {
    const server = await serve({ tlsCert: certs.serverCert, tlsKey: certs.serverKey });
    const trusting = client({ tlsCa: certs.ca });
    expect(await health(server.address, trusting)).toBe("SERVING");
    expect(await health(`localhost:${server.port}`, trusting)).toBe("SERVING");
    const feedback = createClient(FeedbackService, server.address, {
      defaultTimeoutMs: 5000,
      ...(trusting ? { credentials: trusting } : {}),
    });
    try {
      const res = await feedback.score({ items: [{ prompt: "a", completion: "a good day" }] });
      expect(res.scores).toHaveLength(1);
    } finally {
      feedback.close();
    }
    expect(await health(server.address)).toBe("UNAVAILABLE");
    // A client that does not trust the server's CA does not talk to it either.
    expect(await health(server.address, client({ tlsCa: certs.otherCa }))).toBe("UNAVAILABLE");
  });

  it("grpc tls - mTLS refuses a client without a certificate and one from another CA", async () => {
    const server = await serve({
      tlsCert: certs.serverCert,
      tlsKey: certs.serverKey,
      tlsCa: certs.ca,
      tlsClientAuth: "require",
    });
    const withCert = client({ tlsCa: certs.ca, tlsCert: certs.clientCert, tlsKey: certs.clientKey });
    expect(await health(server.address, withCert)).toBe("SERVING");
    expect(await health(server.address, client({ tlsCa: certs.ca }))).toBe("UNAVAILABLE");
    const intruder = client({
      tlsCa: certs.ca,
      tlsCert: certs.otherClientCert,
      tlsKey: certs.otherClientKey,
    });
    expect(await health(server.address, intruder)).toBe("UNAVAILABLE");
    expect(await health(server.address)).toBe("UNAVAILABLE");
  });

  it("grpc tls - files that cannot be used are refused naming the setting", () => {
    const refusal = (files: Partial<TlsFiles>) => {
      try {
        grpcSecurity({ ...NONE, ...files });
        return "accepted";
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
    };
    expect(refusal({ tlsCert: certs.serverCert })).toMatch(
      /services.tlsCert and services.tlsKey go together/,
    );
    expect(refusal({ tlsCa: `${certs.dir}/missing.pem` })).toMatch(
      /^services.tlsCa .*missing.pem: cannot be used as a PEM file: ENOENT/,
    );
    expect(refusal({ tlsCert: certs.serverCert, tlsKey: `${certs.dir}/openssl.cnf` })).toMatch(
      /^services.tlsKey .*: no PEM block/,
    );
    expect(refusal({ tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsClientAuth: "require" })).toMatch(
      /mTLS\) needs --tls-ca/,
    );
    expect(grpcSecurity(NONE).mode).toBe("plaintext");
    // Plaintext beyond loopback is served, but said loudly.
    expect(transportLine("127.0.0.1:1", "0.0.0.0", "plaintext")).toMatch(
      /^grpc: WARNING 127\.0\.0\.1:1 serves plaintext on 0\.0\.0\.0: any host that reaches it can call it/,
    );
    expect(transportLine("127.0.0.1:1", "0.0.0.0", "mTLS")).toBe("grpc: 127.0.0.1:1 serves mTLS");
  });

  it("grpc tls - rlaif serve binds 127.0.0.1 by default, says it is plaintext, and serves mTLS when asked", async () => {
    const plain = startRlaif(["serve", "feedback", "--port", "0"]);
    const mtls = startRlaif([
      ...["serve", "feedback", "--port", "0", "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey],
      ...["--tls-ca", certs.ca, "--tls-client-auth", "require"],
    ]);
    try {
      const listening = (p: typeof plain) =>
        new Promise<string>((resolve, reject) => {
          createInterface({ input: p.child.stdout }).on("line", (line) => {
            const m = /^feedback listening on (\S+)$/.exec(line);
            if (m) resolve(m[1] as string);
          });
          p.child.once("exit", (code) => reject(new Error(`serve exited ${code}: ${p.stderr()}`)));
        });
      const [plainAddress, mtlsAddress] = await Promise.all([listening(plain), listening(mtls)]);
      expect(plainAddress).toMatch(/^127\.0\.0\.1:\d+$/);
      // stderr is its own pipe: the line written before "listening on" may arrive after it.
      await printed(plain, `grpc: ${plainAddress} serves plaintext (loopback only`);
      await printed(mtls, `grpc: ${mtlsAddress} serves mTLS`);
      expect(await health(plainAddress)).toBe("SERVING");
      const withCert = client({ tlsCa: certs.ca, tlsCert: certs.clientCert, tlsKey: certs.clientKey });
      expect(await health(mtlsAddress, withCert)).toBe("SERVING");
      expect(await health(mtlsAddress, client({ tlsCa: certs.ca }))).toBe("UNAVAILABLE");
    } finally {
      plain.child.kill("SIGTERM");
      mtls.child.kill("SIGTERM");
      await Promise.all([plain.done, mtls.done]);
    }
  }, 60_000);
});
