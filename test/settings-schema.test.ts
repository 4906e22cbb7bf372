/**
 * The one settings schema: every run setting is refused the same way by a flag, a config file and
 * StartRun over gRPC, and its default is the same whichever way a run starts (and in proto/'s
 * comments). Walks every setting instead of picking a few, so a new setting is covered by
 * declaring it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { OptimizerService } from "../services/core/gen/rlaif/optimizer/v1/optimizer_pb.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { setPath } from "../services/core/src/config/object-path.js";
import {
  choiceToEnum,
  protoFieldPath,
  runConfigFromSettings,
  settingsFromRunConfig,
} from "../services/core/src/config/run-config.js";
import {
  defaultConfig,
  RUN_SETTINGS,
  type RunSettings,
  SETTINGS,
  type Setting,
} from "../services/core/src/config/settings.js";
import { ConfigError, RpcError } from "../services/core/src/errors.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { implement, type RunningServer, startServer } from "../services/core/src/grpc/server.js";
import { optimizerService } from "../services/optimizer/optimizer-service.js";
import type { RunController } from "../services/optimizer/run-controller.js";

/** Values just outside a number setting's range (each side it has), as they would be typed. */
function outOfRange(s: Setting): number[] {
  const out: number[] = [];
  const step = s.type === "int" ? 1 : 0.5;
  if (s.min !== undefined) out.push(s.min - step);
  if (s.above !== undefined) out.push(s.above);
  if (s.max !== undefined) out.push(s.type === "int" ? s.max + 1 : s.max * 2);
  if (s.below !== undefined) out.push(s.below);
  return out;
}

/** The reason part of "<where>: <reason>". */
function reasonOf(message: string, where: string): string {
  expect(message.startsWith(`${where}: `), `"${message}" should start with "${where}: "`).toBe(true);
  return message.slice(where.length + 2);
}

function configError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error("expected a ConfigError");
}

let dir: string;
let server: RunningServer;
let client: ReturnType<typeof createClient<typeof OptimizerService>>;
/** What the Optimizer's RunController was asked to start with (the last accepted StartRun). */
let started: RunSettings | undefined;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "rlaif-settings-"));
  const runs = {
    start: async (settings: RunSettings) => {
      started = settings;
      return { runId: "accepted" };
    },
  } as unknown as RunController;
  server = await startServer({
    host: "127.0.0.1",
    port: 0,
    services: [implement(OptimizerService, optimizerService(runs, defaultConfig().run))],
  });
  client = createClient(OptimizerService, server.address, { defaultTimeoutMs: 10_000 });
});

afterAll(async () => {
  client.close();
  await server?.shutdown(500);
  rmSync(dir, { recursive: true, force: true });
});

/** StartRun with a config holding one field at `value`: the INVALID_ARGUMENT details, or "" if accepted. */
async function startRunWith(s: (typeof RUN_SETTINGS)[number], value: unknown): Promise<string> {
  const config: Record<string, unknown> = {};
  const wire = s.protoEnum ? value : s.proto === "seed" ? BigInt(value as number) : value;
  setPath(config, s.proto, wire);
  try {
    await client.startRun({ config });
    return "";
  } catch (err) {
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(status.INVALID_ARGUMENT);
    return (err as RpcError).details;
  }
}

describe("settings schema", () => {
  it("settings schema - every setting has a unique flag and config key, and every run setting a RunConfig field", () => {
    expect(new Set(SETTINGS.map((s) => s.flag)).size).toBe(SETTINGS.length);
    expect(new Set(SETTINGS.map((s) => s.path)).size).toBe(SETTINGS.length);
    const runKeys = SETTINGS.filter((s) => s.path.startsWith("run.")).map((s) => s.path.slice(4));
    expect(RUN_SETTINGS.map((s) => s.key)).toEqual(runKeys);
    for (const s of RUN_SETTINGS) expect(() => protoFieldPath(s.proto)).not.toThrow();
    for (const s of SETTINGS) expect(s.help.length, s.path).toBeGreaterThan(5);
  });

  it("settings schema - an out-of-range value is refused by flag, config file and StartRun with the same reason", async () => {
    let checked = 0;
    for (const s of RUN_SETTINGS) {
      if (s.type !== "int" && s.type !== "number") continue;
      for (const v of outOfRange(s)) {
        const flagReason = reasonOf(
          configError(() => loadConfig(undefined, { [s.flag]: String(v) })),
          `--${s.flag}`,
        );
        const file = join(dir, `${s.key}.yaml`);
        writeFileSync(file, stringify({ run: { [s.key]: v } }));
        const fileReason = reasonOf(
          configError(() => loadConfig(file, {})),
          `${file}: ${s.path}`,
        );
        expect(fileReason, s.path).toBe(flagReason);
        // A negative number has no encoding in an unsigned (uint32/uint64) field: nothing to send.
        if (!(v < 0 && s.type === "int")) {
          const rpcReason = reasonOf(await startRunWith(s, v), `config.${protoFieldPath(s.proto)}`);
          expect(rpcReason, s.path).toBe(flagReason);
        }
        expect(flagReason, s.path).toMatch(new RegExp(`got ${String(v).replace(".", "\\.")}$`));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(30);
  });

  it("settings schema - a choice outside the list is refused by all three with the same list of choices", async () => {
    for (const s of RUN_SETTINGS) {
      if (!s.oneOf || !s.protoEnum) continue;
      const flagReason = reasonOf(
        configError(() => loadConfig(undefined, { [s.flag]: "nope" })),
        `--${s.flag}`,
      );
      const file = join(dir, `${s.key}.yaml`);
      writeFileSync(file, stringify({ run: { [s.key]: "nope" } }));
      const fileReason = reasonOf(
        configError(() => loadConfig(file, {})),
        `${file}: ${s.path}`,
      );
      const rpcReason = reasonOf(await startRunWith(s, 99), `config.${protoFieldPath(s.proto)}`);
      expect(fileReason).toBe(flagReason);
      expect(flagReason).toBe(`must be one of ${s.oneOf.join(", ")}, got "nope"`);
      expect(rpcReason).toBe(`must be one of ${s.oneOf.join(", ")}, got 99`);
    }
  });

  it("settings schema - a seed above 2^32-1 is refused, never cut, and the largest one arrives whole", async () => {
    const seed = RUN_SETTINGS.find((s) => s.key === "seed");
    if (!seed) throw new Error("no seed setting");
    expect(await startRunWith(seed, 2 ** 32)).toBe(
      "config.seed: must be between 0 and 4294967295, got 4294967296",
    );
    await expect(client.startRun({ config: { seed: 2n ** 64n - 1n } })).rejects.toThrow(
      "config.seed: must be between 0 and 4294967295, got 18446744073709551615",
    );
    expect(await startRunWith(seed, 2 ** 32 - 1)).toBe("");
    expect(started?.seed).toBe(2 ** 32 - 1);
  });

  it("settings schema - the defaults agree: schema, flags, StartRun with an empty config, proto comments", async () => {
    const defaults = defaultConfig();
    expect(loadConfig(undefined, {})).toEqual(defaults);
    await client.startRun({ config: {} });
    expect(started).toEqual(defaults.run);
    // proto/ documents each RunConfig field's default: "Default <value>." in its comment.
    const proto = readFileSync("proto/rlaif/common/v1/types.proto", "utf8");
    const body = proto.slice(
      proto.indexOf("message RunConfig {"),
      proto.indexOf("// Metrics of one optimizer step."),
    );
    for (const s of RUN_SETTINGS) {
      if (s.key === "prompts" || s.proto.startsWith("sampling.")) continue;
      if (s.proto.startsWith("lora.")) {
        // LoRA's fields are in their own message, LoraConfig; targets' default (empty) is worded.
        const lora = proto.slice(proto.indexOf("message LoraConfig {"));
        const leaf = s.proto.slice("lora.".length);
        const note = lora.slice(0, lora.search(new RegExp(`\\s${leaf} = \\d+;`)));
        const text = note.slice(note.lastIndexOf(";") + 1).replace(/\s*\/\/\s*/g, " ");
        if (Array.isArray(s.default)) expect(text, s.path).toContain("empty =");
        else expect(text, s.path).toContain(`Default ${String(s.default)}.`);
        continue;
      }
      const field = protoFieldPath(s.proto);
      const comment = body.slice(0, body.search(new RegExp(`\\s${field} = \\d+;`)));
      const last = comment.slice(comment.lastIndexOf(";") + 1);
      const expected = s.protoEnum
        ? (s.protoEnum.values.find(
            (v) => v.number === choiceToEnum(s.protoEnum as never, s.default as string),
          )?.name ?? "")
        : String(s.default);
      expect(last.replace(/\s*\/\/\s*/g, " "), s.path).toContain(`Default ${expected}.`);
    }
    // The run's sampling defaults are named in RunConfig.sampling's comment.
    for (const k of ["maxNewTokens", "temperature", "topK", "topP"] as const) {
      const s = RUN_SETTINGS.find((x) => x.key === k);
      expect(body, k).toContain(
        `${protoFieldPath(s?.proto ?? "").split(".")[1]} (default ${defaults.run[k]})`,
      );
    }
  });

  it("settings schema - an unset field keeps the default, a set zero is used as given (temperature 0 is asked-for greedy)", async () => {
    await client.startRun({ config: { sampling: { maxNewTokens: 16 } } });
    expect(started?.temperature).toBe(1);
    expect(started?.maxNewTokens).toBe(16);
    await client.startRun({ config: { sampling: { temperature: 0 }, gamma: 0, klCoef: 0 } });
    expect([started?.temperature, started?.gamma, started?.klCoef]).toEqual([0, 0, 0]);
  });

  it("settings schema - RunConfig from settings and back is the identity, with every field set", () => {
    const s: RunSettings = {
      ...defaultConfig().run,
      baseline: "moving-average",
      offPolicy: "ppo-clip",
      lrDecay: "none",
      seed: 2 ** 32 - 1,
      learningRate: 3e-4,
      prompts: ["a", "b"],
    };
    const back = settingsFromRunConfig(
      // create() is not needed: the mapping reads plain objects of the message's shape.
      runConfigFromSettings(s) as Parameters<typeof settingsFromRunConfig>[0],
      defaultConfig().run,
    );
    expect(back).toEqual(s);
  });

  it("settings schema - a run refuses sampling fields it does not use instead of ignoring them", async () => {
    await expect(client.startRun({ config: { sampling: { seed: 5n } } })).rejects.toThrow(
      /config\.sampling\.seed: must be unset in a run/,
    );
    await expect(client.startRun({ config: { sampling: { stop: ["\n"] } } })).rejects.toThrow(
      /config\.sampling\.stop: must be empty in a run/,
    );
  });

  it("settings schema - an unknown config key suggests the closest one", () => {
    const file = join(dir, "typo.yaml");
    writeFileSync(file, stringify({ run: { learningRat: 0.01 } }));
    expect(configError(() => loadConfig(file, {}))).toBe(
      `${file}: unknown setting "run.learningRat" (did you mean "run.learningRate"?)`,
    );
    writeFileSync(file, stringify({ zzz: 1 }));
    expect(configError(() => loadConfig(file, {}))).toMatch(
      /unknown setting "zzz" \(`rlaif <command> --help` lists/,
    );
  });

  it("settings schema - paths in a config file resolve against the file's folder", () => {
    const file = join(dir, "paths.yaml");
    writeFileSync(file, stringify({ services: { checkpoint: "ckpt/model.safetensors" }, out: "my-runs" }));
    const c = loadConfig(file, {});
    expect(c.services.checkpoint).toBe(join(dir, "ckpt/model.safetensors"));
    expect(c.out).toBe(join(dir, "my-runs"));
    // A flag is relative to the working directory, as on any command line.
    expect(loadConfig(file, { out: "here" }).out).toBe("here");
  });
});
