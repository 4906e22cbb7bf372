/**
 * TLS and mTLS for every gRPC server and client, from PEM files named in the settings
 * (`services.tlsCert`, `tlsKey`, `tlsCa`, `tlsClientAuth`). One set of files serves both roles of
 * a process: a Rollout presents the same certificate to its own callers and, as a client, to the
 * Policy and Feedback services, and trusts the same CA in both directions. Why files and not
 * inline PEM: Kubernetes mounts certificates from Secrets as files, and cert-manager rotates
 * them there.
 *
 * Plaintext stays the default, which is only safe on loopback: `rlaif serve` binds 127.0.0.1
 * unless told otherwise, and says in its start-up line which of plaintext, TLS or mTLS it serves.
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ConfigError } from "../errors.js";

/** The TLS files of one process, as the settings name them ("" = not given). */
export interface TlsFiles {
  /** This process's certificate chain (PEM): served to callers, and presented to servers under mTLS. */
  readonly tlsCert: string;
  /** The private key of `tlsCert` (PEM). */
  readonly tlsKey: string;
  /** CA bundle (PEM) that peers' certificates must chain to: servers' for clients, clients' under mTLS. */
  readonly tlsCa: string;
  /** "require": servers refuse a caller without a certificate from `tlsCa` (mTLS). */
  readonly tlsClientAuth: "none" | "require";
}

/** What a connection is protected by, for start-up lines and errors. */
export type TransportMode = "plaintext" | "TLS" | "mTLS";

/** The credentials of one process: what its servers listen with and what its clients dial with. */
export interface GrpcSecurity {
  /** Absent: plaintext. */
  readonly server?: grpc.ServerCredentials;
  /** Absent: plaintext. */
  readonly client?: grpc.ChannelCredentials;
  /** What `server` gives its callers. */
  readonly mode: TransportMode;
  /**
   * Bearer token the control RPCs (StartRun, CancelRun, Checkpoint, PauseRun, UnpauseRun) require;
   * absent: they are open. See control-token.ts.
   */
  readonly controlToken?: string;
}

function readPem(file: string, field: string): Buffer {
  try {
    const pem = readFileSync(file);
    if (!pem.includes("-----BEGIN ")) throw new Error("no PEM block (-----BEGIN …) in it");
    return pem;
  } catch (err) {
    throw new ConfigError(
      `services.${field} ${file}: cannot be used as a PEM file: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/**
 * The credentials the TLS settings ask for. ConfigError naming the setting when a file is missing
 * or not PEM, a certificate comes without its key (or the other way round), or mTLS is required
 * without a CA to check client certificates against.
 */
export function grpcSecurity(files: TlsFiles, controlToken?: string): GrpcSecurity {
  const token = controlToken ? { controlToken } : {};
  if ((files.tlsCert === "") !== (files.tlsKey === "")) {
    throw new ConfigError(
      "services.tlsCert and services.tlsKey go together: pass both --tls-cert and --tls-key, or neither",
    );
  }
  if (files.tlsClientAuth === "require" && (files.tlsCa === "" || files.tlsCert === "")) {
    throw new ConfigError(
      "services.tlsClientAuth require (mTLS) needs --tls-ca (to check clients) and --tls-cert/--tls-key (to serve TLS)",
    );
  }
  const ca = files.tlsCa ? readPem(files.tlsCa, "tlsCa") : null;
  const pair = files.tlsCert
    ? { cert_chain: readPem(files.tlsCert, "tlsCert"), private_key: readPem(files.tlsKey, "tlsKey") }
    : null;
  const mtls = files.tlsClientAuth === "require";
  const server = pair ? grpc.ServerCredentials.createSsl(ca, [pair], mtls) : undefined;
  // A client speaks TLS once it has something to check the server with (or to show it).
  const client =
    ca || pair
      ? grpc.credentials.createSsl(ca, pair?.private_key ?? null, pair?.cert_chain ?? null)
      : undefined;
  return {
    ...(server ? { server } : {}),
    ...(client ? { client } : {}),
    mode: !server ? "plaintext" : mtls ? "mTLS" : "TLS",
    ...token,
  };
}

/** Is `host` an interface only this machine can reach? */
export function isLoopback(host: string): boolean {
  return host === "localhost" || /^127\./.test(host) || host === "::1" || host === "[::1]";
}

/**
 * The start-up line of a server: what it listens on and with which protection, with a warning
 * when plaintext is reachable from other machines (anyone on the network can then call it).
 */
export function transportLine(address: string, host: string, mode: TransportMode): string {
  if (mode !== "plaintext") return `grpc: ${address} serves ${mode}`;
  return isLoopback(host)
    ? `grpc: ${address} serves plaintext (loopback only; set --tls-cert/--tls-key for TLS)`
    : `grpc: WARNING ${address} serves plaintext on ${host}: any host that reaches it can call it; set --tls-cert/--tls-key (and --tls-client-auth require)`;
}
