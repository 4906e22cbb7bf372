/**
 * `rlaif serve <service>`: one service as its own process, as in a Kubernetes pod. Prints
 * "<service> listening on <address>" on stdout once it serves, and shuts down gracefully on
 * SIGTERM/SIGINT (in-flight calls finish, the worker stops after its job).
 */
import { once } from "node:events";
import { connectBus } from "../../cluster/embedded-cluster.js";
import type { Bus } from "../../core/src/bus/bus.js";
import { ConfigError } from "../../core/src/errors.js";
import { startFeedbackServer } from "../../feedback/main.js";
import { startOptimizerServer } from "../../optimizer/main.js";
import { startPolicyServer } from "../../policy/main.js";
import { startRolloutServer } from "../../rollout/main.js";
import type { CommandRun } from "../args.js";
import { SERVICE_NAMES } from "../specs.js";
import { requireCheckpoint } from "./shared-flags.js";

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** What `rlaif serve` does (its command line is declared in specs.ts). */
export const serveCommand: CommandRun = {
  async run({ config, flags, positionals }) {
    const name = positionals[0] as string;
    if (!(SERVICE_NAMES as readonly string[]).includes(name)) {
      throw new ConfigError(`unknown service "${name}": choose one of ${SERVICE_NAMES.join(", ")}`);
    }
    const rawPort = flags.port;
    if (rawPort === undefined) throw new ConfigError("--port is required (0 picks a free port)");
    const port = Number(rawPort);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ConfigError(`--port must be a whole number in 0..65535, got "${String(rawPort)}"`);
    }
    const host = typeof flags.host === "string" ? flags.host : "0.0.0.0";
    const s = config.services;
    const needBus = async (why: string): Promise<Bus> => {
      if (!s.natsUrl) throw new ConfigError(`serve ${name} needs --nats <url> ${why}`);
      return connectBus(s.natsUrl);
    };
    let address: string;
    let close: () => Promise<void>;
    if (name === "feedback") {
      const server = await startFeedbackServer({ host, port, log });
      address = server.address;
      close = () => server.shutdown(5000);
    } else if (name === "policy") {
      requireCheckpoint(s.checkpoint);
      const bus = s.natsUrl ? await connectBus(s.natsUrl) : undefined;
      const policy = await startPolicyServer({
        host,
        port,
        checkpoint: s.checkpoint,
        backend: s.backend,
        log,
        ...(bus ? { bus } : {}),
      });
      address = policy.server.address;
      close = async () => {
        await policy.close();
        await bus?.close();
      };
    } else if (name === "rollout") {
      if (!s.policyAddress)
        throw new ConfigError("serve rollout needs --policy-address <host:port> of a Policy service");
      if (!s.feedbackAddress) {
        throw new ConfigError(
          "serve rollout needs --feedback-address <host:port> of a FeedbackService (built-in: 'rlaif serve feedback')",
        );
      }
      const bus = await needBus("to pull prompt jobs and publish trajectories");
      const rollout = await startRolloutServer({
        host,
        port,
        policyAddress: s.policyAddress,
        feedbackAddress: s.feedbackAddress,
        rpcTimeoutMs: s.rpcTimeoutMs,
        bus,
        log,
      });
      address = rollout.server.address;
      close = async () => {
        await rollout.close();
        await bus.close();
      };
    } else {
      requireCheckpoint(s.checkpoint);
      const bus = await needBus("to queue jobs, consume trajectories and publish weights");
      const optimizer = await startOptimizerServer({
        host,
        port,
        bus,
        checkpoint: s.checkpoint,
        settings: config.run,
        outDir: config.out,
        stepTimeoutMs: s.stepTimeoutMs,
        backend: s.backend,
        mode: "distributed",
        log,
      });
      address = optimizer.server.address;
      close = async () => {
        await optimizer.close();
        await bus.close();
      };
    }
    process.stdout.write(`${name} listening on ${address}\n`);
    await Promise.race([once(process, "SIGTERM"), once(process, "SIGINT")]);
    log(`${name}: shutting down`);
    await close();
  },
};
