/** `rlaif sample --stop`: repeatable stop sequences, and what a bad one says. */
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

describe("cli sample --stop", () => {
  let prompts: string;
  let checkpoint: string;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "rlaif-cli-stop-"));
    prompts = join(dir, "prompts.txt");
    writeFileSync(prompts, "The film was\nI think that\n");
    checkpoint = await writeTinyCheckpoint();
  });

  it("cli sample - --stop (repeated) ends completions at a stop sequence and leaves it out of the text", () => {
    const base = ["sample", "--checkpoint", checkpoint, "--backend", "wasm", "--prompts", prompts];
    // 16 single-letter stops: the tiny random model samples one of them in most completions.
    const letters = [..."abcdefghijklmnop"];
    const r = rlaif(
      ...base,
      ...letters.flatMap((l) => ["--stop", l]),
      "--samples",
      "4",
      "--max-new-tokens",
      "24",
      "--seed",
      "5",
      "--json",
    );
    expect(r.code, r.stderr).toBe(0);
    const completions = r.stdout
      .trim()
      .split("\n")
      .flatMap((l) => JSON.parse(l).completions);
    expect(completions).toHaveLength(8);
    const stopped = completions.filter((c) => c.finishReason === "stop");
    expect(stopped.length).toBeGreaterThan(0);
    for (const c of completions) {
      // No stop letter survives in any text: the first one sampled ended the completion.
      expect(
        [...c.text].some((ch: string) => letters.includes(ch)),
        c.text,
      ).toBe(false);
      if (c.finishReason === "stop") expect(letters).toContain(c.stop);
      else expect(c.stop).toBeUndefined();
    }
    expect(rlaif("sample", "--help").stdout).toContain("--stop");
  });

  it("cli sample - an empty, too long or 17th --stop exits 2 saying what to fix", () => {
    const base = ["sample", "--checkpoint", checkpoint, "--prompts", prompts];
    const empty = rlaif(...base, "--stop", "");
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/--stop must be 1\.\.128 bytes of UTF-8, got 0/);
    expect(rlaif(...base, "--stop", "x".repeat(129)).stderr).toMatch(/got 129/);
    const many = rlaif(...base, ...Array.from({ length: 17 }, (_, i) => ["--stop", `s${i}`]).flat());
    expect(many.code).toBe(2);
    expect(many.stderr).toMatch(/--stop may be given at most 16 times, got 17/);
  });
});
