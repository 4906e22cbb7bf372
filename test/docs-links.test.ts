/**
 * The repo carries its own design: every relative link in the Markdown files points at a file (and
 * an anchor) the repo has, and no tracked file cites documents that only exist outside it (the
 * original design notes, the platform notes, issue numbers).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "..");
const tracked = execFileSync("git", ["ls-files"], { cwd: ROOT, encoding: "utf8" })
  .split("\n")
  .filter((f) => f && existsSync(join(ROOT, f)));

/** Anchors a Markdown file offers: explicit `<a id>` and GitHub's slugs of its headings. */
function anchors(text: string): Set<string> {
  const ids = new Set([...text.matchAll(/<a id="([^"]+)"/g)].map((m) => m[1] as string));
  for (const m of text.matchAll(/^#+\s+(.+)$/gm)) {
    const slug = (m[1] as string)
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    ids.add(slug);
  }
  return ids;
}

describe("docs links", () => {
  it("docs - every relative Markdown link resolves to a file and anchor in the repo", () => {
    const broken: string[] = [];
    for (const file of tracked.filter((f) => f.endsWith(".md"))) {
      const text = readFileSync(join(ROOT, file), "utf8");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1] as string;
        if (/^[a-z]+:/i.test(target)) continue;
        const [path, anchor] = target.split("#") as [string, string | undefined];
        const abs = path ? resolve(ROOT, dirname(file), path) : join(ROOT, file);
        if (!existsSync(abs)) {
          broken.push(`${file}: ${target} (no such file)`);
          continue;
        }
        if (anchor && abs.endsWith(".md") && !anchors(readFileSync(abs, "utf8")).has(anchor)) {
          broken.push(`${file}: ${target} (no such anchor)`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it("docs - no tracked file cites the design notes, platform notes or issues that live outside the repo", () => {
    const outside = /DESIGN\.md|DESIGN §|NOTES-platform|\bissue \d+\b/;
    const hits = tracked
      .filter((f) => !f.startsWith("checkpoints/") || f.endsWith(".md"))
      .filter((f) => !/\.(safetensors|png|jpg)$/.test(f) && f !== "test/docs-links.test.ts")
      .flatMap((f) =>
        readFileSync(join(ROOT, f), "utf8")
          .split("\n")
          .flatMap((line, i) => (outside.test(line) ? [`${f}:${i + 1}: ${line.trim()}`] : [])),
      );
    expect(hits).toEqual([]);
  });
});
