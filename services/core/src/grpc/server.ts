/**
 * Starts a service process's gRPC server the same way for all four services: the typed
 * implementations, grpc.health.v1 (what Kubernetes' native gRPC probes and load balancers ask)
 * and server reflection (so `grpcurl list` and friends work without the .proto files).
 *
 * Message sizes stay at the gRPC defaults: 4 MiB received per message, unlimited sent. Weights
 * travel through the NATS Object Store, never over gRPC, and the API's batch limits (rules.ts)
 * keep requests far below 4 MiB. Raise `grpc.max_receive_message_length` in `channelOptions`
 * only if a deployment really needs bigger batches.
 */
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, service as healthService } from "grpc-health-check";
import { buildServiceDefinition, type ServiceImpl } from "./adapter.js";
import { guardHandlers } from "./control-token.js";
import { type GrpcSecurity, transportLine } from "./credentials.js";
import type { RuleSet } from "./validation.js";

/** One service to serve. Build it with `implement()` so the compiler checks the handlers. */
export interface ServiceEntry {
  readonly service: DescService;
  readonly impl: object;
  /** Request rules; default: the API's `REQUEST_RULES`. */
  readonly rules?: readonly RuleSet[];
}

/** Pair a generated service with its typed implementation (and optionally its own rules). */
export function implement<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  rules?: readonly RuleSet[],
): ServiceEntry {
  return rules ? { service, impl, rules } : { service, impl };
}

/** Options of `startServer`. */
export interface ServerOptions {
  /**
   * Interface to listen on; default "127.0.0.1" (this machine only). A pod passes "0.0.0.0"
   * explicitly, and should then serve TLS (`security`).
   */
  host?: string;
  /** Port; 0 picks a free one (tests). */
  port: number;
  services: readonly ServiceEntry[];
  /** Default: insecure (plaintext); pass `grpc.ServerCredentials.createSsl(...)` for TLS/mTLS. */
  credentials?: grpc.ServerCredentials;
  /**
   * TLS/mTLS and the control token from the settings (credentials.ts): `security.server` is used
   * when `credentials` is not given, and with a `controlToken` the control RPCs require it.
   */
  security?: GrpcSecurity;
  /** grpc-js server options, e.g. keepalive or message-size limits. */
  channelOptions?: grpc.ChannelOptions;
  /** Where unexpected handler failures (and with `security`, the start-up transport line) go; default stderr. */
  log?: (line: string) => void;
}

/** A listening server. */
export interface RunningServer {
  /** The bound port (the real one when 0 was asked). */
  readonly port: number;
  /** An address a local client can dial, e.g. "127.0.0.1:50051". */
  readonly address: string;
  /** The grpc-js server, for anything this module does not cover. */
  readonly server: grpc.Server;
  /**
   * Set the health status of "" (the whole server) or a service's full name, e.g. NOT_SERVING
   * while a Policy replica has no weights, so probes and balancers route around it.
   */
  setServing(name: string, serving: boolean): void;
  /**
   * Report NOT_SERVING, let in-flight calls finish for up to `graceMs`, then cut the rest.
   * Resolves when the server is closed.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/**
 * The reflection service wants a proto-loader package definition; all it reads is the serialized
 * FileDescriptorProtos, which protobuf-es has for every generated file and its imports.
 */
function reflectionPackage(
  services: readonly DescService[],
): ConstructorParameters<typeof ReflectionService>[0] {
  const files = new Map<string, Buffer>();
  const visit = (file: DescFile): void => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
    for (const dep of file.dependencies) visit(dep);
  };
  for (const s of services) visit(s.file);
  const fileDescriptorProtos = [...files.values()];
  const pkg: ConstructorParameters<typeof ReflectionService>[0] = {
    // grpc-health-check's definition carries its own descriptors: list the health service too.
    "grpc.health.v1.HealthCheckRequest": healthService.Check.requestType,
  };
  for (const s of services) {
    pkg[s.typeName] = { format: "Protocol Buffer 3 DescriptorProto", type: {}, fileDescriptorProtos };
  }
  return pkg;
}

function dialable(host: string, port: number): string {
  if (host === "0.0.0.0") return `127.0.0.1:${port}`;
  if (host === "::" || host === "[::]") return `[::1]:${port}`;
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Start a gRPC server with the given services, health (overall "" and every service SERVING) and
 * reflection. Rejects if the port cannot be bound.
 */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const host = options.host ?? "127.0.0.1";
  const token = options.security?.controlToken;
  const server = new grpc.Server(options.channelOptions);
  const log = options.log;
  for (const entry of options.services) {
    const { definition, implementation } = buildServiceDefinition(entry.service, entry.impl, {
      ...(entry.rules ? { rules: entry.rules } : {}),
      ...(log ? { log } : {}),
    });
    server.addService(definition, token ? guardHandlers(definition, implementation, token) : implementation);
  }
  const names = ["", ...options.services.map((e) => e.service.typeName)];
  const health = new HealthImplementation(Object.fromEntries(names.map((n) => [n, "SERVING"])));
  health.addToServer(server);
  // Only the services this server implements are listed: the descriptors also hold every service
  // of the files they import (common/v1 imports feedback/v1), which this server does not serve.
  const served = options.services.map((e) => e.service);
  new ReflectionService(reflectionPackage(served), {
    services: ["grpc.health.v1.Health", ...served.map((s) => s.typeName)],
  }).addToServer(server);

  const bindHost = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${bindHost}:${options.port}`,
      options.credentials ?? options.security?.server ?? grpc.ServerCredentials.createInsecure(),
      (err, bound) => (err ? reject(err) : resolve(bound)),
    );
  });

  const address = dialable(host, port);
  // A served process (security from its settings) says what protects it; in-process servers of
  // an embedded run stay quiet.
  if (log && options.security && !options.credentials) {
    const line = transportLine(address, host, options.security.mode);
    log(`${line}${token ? "; control RPCs need the control token" : ""}`);
  }
  let closing: Promise<void> | undefined;
  return {
    port,
    address,
    server,
    setServing: (name, serving) => health.setStatus(name, serving ? "SERVING" : "NOT_SERVING"),
    shutdown(graceMs = 5000) {
      closing ??= new Promise<void>((resolve) => {
        for (const n of names) health.setStatus(n, "NOT_SERVING");
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return closing;
    },
  };
}
