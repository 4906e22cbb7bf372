/**
 * `rlaif nats-init`: what the k8s init Job (k8s/base/nats-init.yaml) runs before the services
 * need the bus, so that streams are created with the cluster's replica count and the Rollout's
 * consumer exists for KEDA while no Rollout runs (services/core/src/bus/nats-init.ts). Safe to
 * run any number of times: a second run changes nothing.
 */
import { natsClientAuth } from "../../core/src/bus/nats-auth.js";
import { initNats, NATS_INIT_PARTS, type NatsInitPart } from "../../core/src/bus/nats-init.js";
import { ConfigError } from "../../core/src/errors.js";
import type { CommandRun } from "../args.js";

/** `--replicas` as a JetStream replica count, or a ConfigError saying what to fix. */
function replicasFlag(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== "string" || !/^\d+$/.test(value) || n < 1 || n > 5) {
    throw new ConfigError(
      `--replicas ${String(value)}: must be a whole number from 1 to 5 (JetStream's limit)`,
    );
  }
  return n;
}

/** `--part` as one of {@link NATS_INIT_PARTS}, or a ConfigError naming the valid ones. */
function partFlag(value: unknown): NatsInitPart {
  if (value === undefined) return "all";
  if (typeof value === "string" && (NATS_INIT_PARTS as readonly string[]).includes(value)) {
    return value as NatsInitPart;
  }
  throw new ConfigError(`--part ${String(value)}: must be one of ${NATS_INIT_PARTS.join(", ")}`);
}

/** What `rlaif nats-init` does (its command line is declared in specs.ts). */
export const natsInitCommand: CommandRun = {
  async run({ config, flags }) {
    const s = config.services;
    if (!s.natsUrl) throw new ConfigError("--nats <url> is required (the server to prepare)");
    const part = partFlag(flags.part);
    const replicas = replicasFlag(flags.replicas);
    if (part === "consumer" && replicas !== undefined) {
      throw new ConfigError("--replicas applies to --part streams or all (the consumer takes its stream's)");
    }
    const report = await initNats({
      url: s.natsUrl,
      part,
      auth: natsClientAuth(s),
      ...(replicas === undefined ? {} : { replicas }),
      log: (line) => process.stderr.write(`${line}\n`),
    });
    const r = replicas === undefined ? "" : ` (R${replicas})`;
    for (const stream of report.streams)
      process.stdout.write(`rlaif nats-init: stream ${stream}${r} ready\n`);
    for (const c of report.consumers) process.stdout.write(`rlaif nats-init: consumer ${c} ready\n`);
  },
};
