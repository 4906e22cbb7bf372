/**
 * Writes the README's settings table from the settings schema (services/core/src/config/settings.ts),
 * between the markers `<!-- settings-table:start -->` and `<!-- settings-table:end -->`.
 * `--check` only compares and exits 1 when the README is stale (run by scripts/check-gen.sh, like
 * the generated proto code), so the table can never drift from what the code accepts.
 *
 *   npx tsx scripts/settings-table.ts          # rewrite the table
 *   npx tsx scripts/settings-table.ts --check  # exit 1 if it differs
 */
import { readFileSync, writeFileSync } from "node:fs";
import { protoFieldPath } from "../services/core/src/config/run-config.js";
import { DEFAULT_CHECKPOINT, REPO_ROOT, rangeText, SETTINGS, type Setting } from "../services/core/src/config/settings.js";

const START = "<!-- settings-table:start -->";
const END = "<!-- settings-table:end -->";
const README = `${REPO_ROOT}README.md`;

function defaultText(s: Setting): string {
  if (s.default === DEFAULT_CHECKPOINT) return "`checkpoints/default`";
  if (Array.isArray(s.default)) return s.default.length ? `\`${JSON.stringify(s.default)}\`` : "(none)";
  if (s.default === "") return '`""`';
  return `\`${String(s.default)}\``;
}

function valuesText(s: Setting): string {
  if (s.oneOf) return s.oneOf.map((c) => `\`${c}\``).join(", ");
  if (s.type === "strings") return `up to ${s.maxItems ?? "any number of"} texts${s.maxItemBytes ? ` of 1–${s.maxItemBytes} bytes` : ""}`;
  if (s.pattern) return s.patternHelp ?? "text";
  const range = rangeText(s);
  return range ? `${s.type === "int" ? "integer " : ""}${range}${s.unit ? ` ${s.unit}` : ""}` : "text";
}

/** The table as Markdown. */
export function settingsTable(): string {
  const rows = SETTINGS.map((s) => {
    const proto = s.proto ? `\`${protoFieldPath(s.proto)}\`${s.protoEnum ? ` (\`${s.protoEnum.name}\`)` : ""}` : "—";
    return `| \`${s.path}\` | \`--${s.flag}\` | ${proto} | ${defaultText(s)} | ${valuesText(s)} | ${s.help.replace(/\|/g, "\\|")} |`;
  });
  return [
    "| config key | flag | `RunConfig` field | default | values | what |",
    "|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

const readme = readFileSync(README, "utf8");
const a = readme.indexOf(START);
const b = readme.indexOf(END);
if (a < 0 || b < a) {
  console.error(`README.md has no ${START} … ${END} block`);
  process.exit(1);
}
const updated = `${readme.slice(0, a + START.length)}\n${settingsTable()}\n${readme.slice(b)}`;
if (process.argv.includes("--check")) {
  if (updated !== readme) {
    console.error("README.md's settings table is stale: run 'npx tsx scripts/settings-table.ts' and commit the result");
    process.exit(1);
  }
  console.log("settings table is up to date");
} else {
  writeFileSync(README, updated);
}
