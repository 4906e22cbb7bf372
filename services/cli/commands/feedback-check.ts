/**
 * `rlaif feedback-check <host:port>`: runs the conformance suite (../feedback-conformance.ts)
 * against a FeedbackService and prints a PASS/FAIL table (or `--json`). Exit 0 when every row
 * passes, 1 when any fails, 2 on bad flags or when nothing answers at the address, so a CI job
 * can gate a scorer's release on it.
 */
import { status } from "@grpc/grpc-js";
import { FeedbackService } from "../../core/gen/rlaif/feedback/v1/feedback_pb.js";
import { ConfigError } from "../../core/src/errors.js";
import { createClient } from "../../core/src/grpc/client.js";
import { grpcSecurity } from "../../core/src/grpc/credentials.js";
import type { CommandRun } from "../args.js";
import { checkTable, runFeedbackChecks } from "../feedback-conformance.js";

/** `--timeout-ms`, checked: a whole number of ms in 1..600000. */
function timeoutOf(flag: unknown): number {
  if (flag === undefined) return 10_000;
  const ms = Number(flag);
  if (!Number.isInteger(ms) || ms < 1 || ms > 600_000) {
    throw new ConfigError(`--timeout-ms must be a whole number of ms in 1..600000, got "${String(flag)}"`);
  }
  return ms;
}

/** What `rlaif feedback-check` does (its command line is declared in specs.ts). */
export const feedbackCheckCommand: CommandRun = {
  async run({ config, flags, positionals }) {
    const address = positionals[0] ?? "";
    if (!/^[^\s:]+:\d{1,5}$/.test(address)) {
      throw new ConfigError(`the address must be host:port (e.g. 127.0.0.1:50053), got "${address}"`);
    }
    const timeoutMs = timeoutOf(flags["timeout-ms"]);
    const { client: credentials } = grpcSecurity(config.services);
    const client = createClient(FeedbackService, address, {
      defaultTimeoutMs: timeoutMs,
      ...(credentials ? { credentials } : {}),
    });
    try {
      try {
        await client.getInfo({}, { timeoutMs });
      } catch (err) {
        // a refused connection (not a slow or broken server: that is the suite's to report)
        if ((err as { code?: number }).code === status.UNAVAILABLE) {
          throw new ConfigError(`no gRPC server answers at ${address} (${(err as Error).message})`);
        }
      }
      const rows = await runFeedbackChecks(client, timeoutMs);
      if (flags.json === true) process.stdout.write(`${JSON.stringify({ address, rows })}\n`);
      else process.stdout.write(checkTable(rows));
      const failed = rows.filter((r) => !r.pass).length;
      if (failed > 0) throw new Error(`${failed} of ${rows.length} checks failed against ${address}`);
    } finally {
      client.close();
    }
  },
};
