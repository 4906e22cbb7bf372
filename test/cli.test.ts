import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { writeTinyCheckpoint } from "./helpers/tiny-model.js";

const BIN = join(import.meta.dirname, "..", "bin", "rlaif.js");

function rlaif(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("cli", () => {
  let dir: string;
  let checkpoint: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rlaif-cli-"));
    checkpoint = await writeTinyCheckpoint();
  });

  it("cli - --help works for every command and lists its flags", () => {
    for (const cmd of ["train", "serve", "up", "pretrain", "sample"]) {
      const r = rlaif(cmd, "--help");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: rlaif ${cmd}`);
      expect(r.stdout).toContain("--help");
    }
    expect(rlaif("train", "--help").stdout).toContain("--feedback-address");
    expect(rlaif("serve", "--help").stdout).toContain("--feedback-address");
    expect(rlaif("up", "--help").stdout).toContain("--feedback-address");
    const top = rlaif("--help");
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/train.*\n.*serve.*\n.*up.*\n.*pretrain/);
  });

  it("cli - bad flags and config exit 2 with a message that says what to fix", () => {
    const cases: [string[], RegExp][] = [
      [["train", "--steps", "0"], /--steps: must be between 1 and 100000, got 0/],
      [["train", "--lr", "fast"], /--lr: expected a number, got "fast"/],
      [["train", "--bogus"], /Unknown option '--bogus'/],
      [["train", "--backend", "tpu"], /--backend: must be one of auto, tensorflow, wasm, cpu/],
      [["train", "--feedback-address", "nohost"], /--feedback-address: must look like host:port/],
      [["train", "--config", join(dir, "missing.yaml")], /cannot read config file/],
      [["train", "--checkpoint", join(dir, "none.safetensors")], /does not exist: pass --checkpoint/],
      [["serve", "nope", "--port", "1"], /unknown service "nope"/],
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

  it("cli - train reads a YAML config, flags override it, and --json ends stdout with a RunSummary", () => {
    const file = join(dir, "run.yaml");
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
        `  checkpoint: ${checkpoint}`,
        "  backend: wasm",
        `out: ${join(dir, "runs")}`,
        "",
      ].join("\n"),
    );
    const r = rlaif("train", "--config", file, "--steps", "2", "--json");
    expect(r.code, r.stderr).toBe(0);
    const last = r.stdout.trim().split("\n").at(-1) as string;
    const summary = JSON.parse(last);
    expect(summary.steps).toBe(2);
    expect(summary.trajectories).toBe(8);
    expect(summary.mode).toBe("embedded");
    expect(typeof summary.firstMeanReward).toBe("number");
    expect(typeof summary.lastMeanReward).toBe("number");
    expect(typeof summary.finalKl).toBe("number");
    expect(Number(summary.finalWeightsVersion)).toBeGreaterThanOrEqual(3);
    expect(summary.wallSeconds).toBeGreaterThan(0);
    expect(summary.checkpointPath).toContain(join(dir, "runs"));
    // Not a TTY: progress goes to stderr as plain lines, one per step.
    expect(r.stderr.match(/^step \d\/2 reward/gm)).toHaveLength(2);
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
