import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { StepMetricsSchema } from "../services/core/gen/rlaif/common/v1/types_pb.js";
import { sha256Hex } from "../services/core/src/hash.js";
import { loadBlas } from "../services/core/src/model/native-blas.js";
import { RULE_SCORER_ID, RULE_SCORER_VERSION } from "../services/feedback/scorer.js";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const BIN = join(import.meta.dirname, "..", "bin", "rlaif.js");
const VERSION = JSON.parse(readFileSync(join(import.meta.dirname, "..", "package.json"), "utf8")).version;

function rlaifIn(
  cwd: string | undefined,
  args: string[],
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000, cwd });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function rlaif(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  return rlaifIn(undefined, args);
}

describe("cli", () => {
  let dir: string;
  let checkpoint: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rlaif-cli-"));
    checkpoint = await writeTinyCheckpoint();
  });

  it("cli - --help works for every command and lists its flags", () => {
    for (const cmd of ["train", "serve", "up", "run", "status", "cancel", "pretrain", "sample"]) {
      const r = rlaif(cmd, "--help");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: rlaif ${cmd}`);
      expect(r.stdout).toContain("--help");
    }
    const train = rlaif("train", "--help").stdout;
    expect(train).toContain("--feedback-address");
    // The embedded run's telemetry, as `rlaif serve` has it (cli/train-telemetry.ts).
    for (const f of ["--metrics-port", "--log-format", "--otlp-endpoint", "--otlp-headers"])
      expect(train, f).toContain(f);
    expect(train).toMatch(/rlaif train --resume runs\/<run id> --steps 40/);
    expect(train).toMatch(/--config <file> .*relative paths in it .*resolve against the file's folder/i);
    expect(rlaif("up", "--help").stdout).toContain("--feedback-address");
    expect(rlaif("sample", "--help").stdout).toContain("--prompts examples/prompts.txt");
    const top = rlaif("--help");
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/train.*\n.*serve.*\n.*up.*\n.*run.*\n.*status.*\n.*cancel.*\n.*pretrain/);
  });

  it("cli - serve <service> --help lists only the flags that service uses", () => {
    const flagsOf = (service: string) => {
      const r = rlaif("serve", service, "--help");
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`Usage: rlaif serve ${service} --port <n>`);
      return new Set([...r.stdout.matchAll(/^ {2}(?:-\w, )?--([a-z-]+)/gm)].map((m) => m[1]));
    };
    const common = [
      "config",
      "port",
      "host",
      "version",
      "help",
      "tls-cert",
      "tls-key",
      "tls-ca",
      "tls-client-auth",
      "metrics-port",
      "log-format",
      "otlp-endpoint",
      "otlp-headers",
    ];
    const natsAuth = ["nats-user", "nats-password", "nats-creds"];
    const judge = [
      "judge-url",
      "judge-model",
      "judge-mode",
      "judge-rubric-file",
      "judge-api-key-env",
      "judge-api-key-file",
      "judge-timeout-ms",
      "judge-temperature",
      "judge-weight",
    ];
    expect([...flagsOf("feedback")].sort()).toEqual(
      [...common, "feedback-rules", "reward-model", "reward-model-weight", "backend", ...judge].sort(),
    );
    expect([...flagsOf("policy")].sort()).toEqual(
      [
        ...common,
        ...natsAuth,
        "checkpoint",
        "model",
        "backend",
        "nats",
        "policy-batch-rows",
        "policy-queue-rows",
        "weights-verify-key",
        "openai-port",
        "openai-token",
        "openai-token-file",
        "openai-model",
      ].sort(),
    );
    expect([...flagsOf("rollout")].sort()).toEqual(
      [
        ...common,
        ...natsAuth,
        "nats",
        "policy-address",
        "feedback-address",
        "rpc-timeout-ms",
        "feedback-timeout-ms",
        "rollout-concurrency",
        "rollout-retry-ms",
        "rollout-max-deliver",
      ].sort(),
    );
    const optimizer = flagsOf("optimizer");
    for (const f of ["checkpoint", "model", "nats", "out", "step-timeout-ms", "steps", "lr", "kl-coef"])
      expect(optimizer.has(f), f).toBe(true);
    for (const f of ["weights-signing-key", "weights-retention"]) expect(optimizer.has(f), f).toBe(true);
    expect(optimizer.has("weights-verify-key")).toBe(false);
    for (const f of [...natsAuth, "control-token", "control-token-file"])
      expect(optimizer.has(f), f).toBe(true);
    expect(optimizer.has("policy-address")).toBe(false);
    expect(optimizer.has("rpc-timeout-ms")).toBe(false);
    // `rlaif serve --help` names the services and where their flags are.
    const serve = rlaif("serve", "--help").stdout;
    for (const s of ["policy", "rollout", "feedback", "optimizer"])
      expect(serve).toMatch(new RegExp(`^  ${s} `, "m"));
    expect(serve).toContain("rlaif serve <service> --help");
  });

  it("cli - --version prints package.json's version, on rlaif and on every command", () => {
    for (const args of [["--version"], ["-v"], ["train", "--version"], ["serve", "policy", "--version"]]) {
      const r = rlaif(...args);
      expect(r.code, args.join(" ")).toBe(0);
      expect(r.stdout).toBe(`rlaif ${VERSION}\n`);
    }
    for (const cmd of ["up", "pretrain", "sample", "serve"])
      expect(rlaif(cmd, "--version").stdout).toBe(`rlaif ${VERSION}\n`);
  });

  it("cli - bad flags and config exit 2 with a message that says what to fix", () => {
    const cases: [string[], RegExp][] = [
      [["train", "--steps", "0"], /--steps: must be between 1 and 100000, got 0/],
      [["train", "--lr", "fast"], /--lr: expected a number, got "fast"/],
      [["train", "--bogus"], /unknown flag --bogus\n/],
      [["train", "--stpes", "3"], /unknown flag --stpes \(did you mean --steps\?\)/],
      [
        ["train", "--prompt-per-step=3"],
        /unknown flag --prompt-per-step \(did you mean --prompts-per-step\?\)/,
      ],
      [["trian"], /unknown command "trian" \(did you mean "train"\?\)/],
      [["serve", "polcy", "--port", "0"], /unknown service "polcy" \(did you mean "policy"\?\)/],
      [
        ["serve", "policy", "--port", "0", "--policy-address", "a:1"],
        /--policy-address is not a flag of serve policy; serve rollout takes it/,
      ],
      [["train", "--backend", "tpu"], /--backend: must be one of auto, tensorflow, wasm, cpu/],
      [["train", "--log-format", "xml"], /--log-format: must be one of text, json/],
      [["train", "--metrics-port", "http"], /--metrics-port/],
      [["train", "--feedback-address", "nohost"], /--feedback-address: must look like host:port/],
      [["train", "--config", join(dir, "missing.yaml")], /cannot read config file/],
      [["train", "--checkpoint", join(dir, "none.safetensors")], /does not exist: pass --checkpoint/],
      [
        ["serve", "nope", "--port", "1"],
        /unknown service "nope": choose one of policy, rollout, feedback, optimizer/,
      ],
      [["serve", "feedback"], /--port is required/],
      [["serve", "rollout", "--port", "0"], /needs --policy-address/],
      [["serve", "optimizer", "--port", "0", "--checkpoint", checkpoint], /needs --nats <url>/],
      [["pretrain"], /--out <file.safetensors> is required/],
      [["sample", "--checkpoint", checkpoint], /--prompts <file> is required/],
      [
        ["sample", "--checkpoint", checkpoint, "--prompts", join(dir, "none.txt")],
        /cannot read --prompts file/,
      ],
      // tfjs-node is not installed here: an explicit native backend must fail, not fall back.
      [
        ["serve", "policy", "--port", "0", "--checkpoint", checkpoint, "--backend", "tensorflow"],
        /backend "tensorflow" could not be started/,
      ],
      [["frobnicate"], /unknown command "frobnicate"/],
    ];
    for (const [args, message] of cases) {
      const r = rlaif(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(message);
    }
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "run:\n  stepz: 3\n");
    const r = rlaif("train", "--config", bad);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown setting "run\.stepz"/);
    writeFileSync(bad, "run:\n  gamma: 2\n");
    expect(rlaif("train", "--config", bad).stderr).toMatch(/run\.gamma: must be between 0 and 1, got 2/);
  });

  it("cli - train reads a YAML config (paths relative to its folder), flags override it, and --json ends stdout with a RunSummary", () => {
    const file = join(dir, "run.yaml");
    copyFileSync(checkpoint, join(dir, "model.safetensors"));
    writeFileSync(
      file,
      [
        "run:",
        "  steps: 5",
        "  promptsPerStep: 2",
        "  samplesPerPrompt: 2",
        "  maxNewTokens: 6",
        "  prompts: [The film was, I think]",
        "services:",
        "  checkpoint: model.safetensors",
        "  backend: wasm",
        "out: runs",
        "",
      ].join("\n"),
    );
    // Run from another directory: the config's relative paths still mean its own folder.
    const r = rlaifIn(tmpdir(), ["train", "--config", file, "--steps", "2", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const last = r.stdout.trim().split("\n").at(-1) as string;
    const summary = JSON.parse(last);
    expect(summary.steps).toBe(2);
    expect(summary.trajectories).toBe(8);
    expect(summary.mode).toBe("embedded");
    expect(typeof summary.firstMeanReward).toBe("number");
    expect(typeof summary.lastMeanReward).toBe("number");
    expect(typeof summary.finalKl).toBe("number");
    expect(summary.finalWeightsVersion).toBeGreaterThanOrEqual(3);
    expect(summary.wallSeconds).toBeGreaterThan(0);
    expect(summary.checkpointPath).toContain(join(dir, "runs"));
    // Not a TTY: progress goes to stderr as plain lines, one per step.
    expect(r.stderr.match(/^step \d\/2 reward/gm)).toHaveLength(2);

    const runDir = join(dir, "runs", summary.runId);
    // config.json: the settings and where the run came from.
    const config = JSON.parse(readFileSync(join(runDir, "config.json"), "utf8"));
    expect(config.steps).toBe(2);
    expect(config.provenance).toEqual({
      rlaif: VERSION,
      model: {
        path: join(dir, "model.safetensors"),
        sha256: sha256Hex(readFileSync(join(dir, "model.safetensors"))),
      },
      // The child runs wasm with the OpenBLAS matmul when the addon loads here, plain wasm otherwise.
      backend: loadBlas().addon ? "wasm+blas" : "wasm",
      bus: "embedded",
      mode: "embedded",
      feedback: {
        address: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
        inProcess: true,
        scorers: [{ id: RULE_SCORER_ID, version: RULE_SCORER_VERSION }],
      },
    });
    // metrics.jsonl: one plain object per step, every field, numbers as numbers.
    const lines = readFileSync(join(runDir, "metrics.jsonl"), "utf8").trim().split("\n");
    expect(lines).toHaveLength(2);
    lines.forEach((line, i) => {
      const m = JSON.parse(line);
      expect(Object.keys(m).sort()).toEqual(StepMetricsSchema.fields.map((f) => f.jsonName).sort());
      expect(m.step).toBe(i + 1);
      // With the default overlap (maxStaleness 1) a step's weights go out with the next step: a
      // step's line names the version its samples came from (the reference is v1), the last
      // step's its own.
      expect(m.weightsVersion).toBe(i + 1 === lines.length ? summary.finalWeightsVersion : i + 1);
      expect(m.runId).toBe(summary.runId);
      expect(m.updateSkipped).toBe(false);
      for (const f of StepMetricsSchema.fields) {
        if (f.fieldKind !== "scalar" || f.jsonName === "runId") continue;
        const flag = ["updateSkipped", "weightsDelta"].includes(f.jsonName);
        expect(typeof m[f.jsonName], f.jsonName).toBe(flag ? "boolean" : "number");
      }
    });
  });

  it("cli - sample prints one JSON object per prompt, reproducibly for a seed", () => {
    const prompts = join(dir, "prompts.txt");
    writeFileSync(prompts, "The film was\n\nI think that\n");
    const args = ["sample", "--checkpoint", checkpoint, "--backend", "wasm", "--prompts", prompts];
    const a = rlaif(...args, "--samples", "2", "--max-new-tokens", "6", "--seed", "3", "--json");
    expect(a.code, a.stderr).toBe(0);
    const lines = a.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.prompt)).toEqual(["The film was", "I think that"]);
    for (const l of lines) {
      expect(l.completions).toHaveLength(2);
      for (const c of l.completions) {
        expect(c.tokens).toBeGreaterThan(0);
        expect(c.tokens).toBeLessThanOrEqual(6);
        expect(c.logprob).toBeLessThan(0);
      }
    }
    const b = rlaif(...args, "--samples", "2", "--max-new-tokens", "6", "--seed", "3", "--json");
    expect(b.stdout).toBe(a.stdout);
  });
});
