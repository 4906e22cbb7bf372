/**
 * `rlaif train --nats` against a nats-server that requires users: the embedded cluster's one bus
 * connection logs in with --nats-user / --nats-password (or RLAIF_NATS_USER / RLAIF_NATS_PASSWORD),
 * and without them the server refuses it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectBus } from "../services/cluster/embedded-cluster.js";
import { type NatsServerHandle, startNatsServer } from "../services/core/src/bus/nats-server.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasNats = requireTool(TOOLS.natsServer);
/** One user for the whole embedded cluster: it needs every service's grants. */
const TRAIN_USER = {
  user: "train",
  password: "s3cret-train",
  permissions: { publish: { allow: [">"] }, subscribe: { allow: [">"] } },
};
const none = { natsUser: "", natsPassword: "", natsCreds: "" };

describe.skipIf(!hasNats)("train nats auth", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer({ users: [TRAIN_USER] });
  }, 30_000);
  afterAll(async () => {
    await server?.stop();
  });

  it("train nats auth - with --nats-user and --nats-password the bus connects and works; without them it is refused", async () => {
    const bus = await connectBus(server.url, { ...none, natsUser: "train", natsPassword: "s3cret-train" });
    try {
      const kv = await bus.kv();
      await kv.put("train-auth-check", new TextEncoder().encode("ok"));
      expect(new TextDecoder().decode((await kv.get("train-auth-check"))?.value)).toBe("ok");
    } finally {
      await bus.close();
    }
    await expect(connectBus(server.url, none)).rejects.toThrow();
    await expect(
      connectBus(server.url, { ...none, natsUser: "train", natsPassword: "wrong" }),
    ).rejects.toThrow();
  }, 60_000);
});
