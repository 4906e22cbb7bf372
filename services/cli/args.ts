/**
 * Command-line parsing shared by every command: flags come from the settings table (so a flag,
 * its config-file key and its validation are declared once) plus a command's own flags, and
 * `--help` text is generated from the same declarations.
 */
import { parseArgs } from "node:util";
import { loadConfig } from "../core/src/config/load-config.js";
import { type RlaifConfig, rangeText, settingByFlag } from "../core/src/config/settings.js";
import { ConfigError } from "../core/src/errors.js";

/** A flag that belongs to one command rather than to the shared settings. */
export interface CommandFlag {
  name: string;
  type: "string" | "boolean";
  help: string;
  /** A string flag that may be given more than once (its value is then a string[]). */
  multiple?: boolean;
}

/** What a command declares about its command line. */
export interface CommandSpec {
  name: string;
  /** One-line summary for `rlaif --help`. */
  summary: string;
  /** Usage line, e.g. `rlaif serve <policy|rollout|feedback|optimizer> [flags]`. */
  usage: string;
  /** Shared settings (by flag name) this command reads. */
  settings: readonly string[];
  /** Flags of this command only. */
  flags?: readonly CommandFlag[];
  /** How many positional arguments it takes. */
  positionals?: number;
}

/** Parsed command line: the effective config, the command's own flags, and positionals. */
export interface ParsedCommand {
  config: RlaifConfig;
  flags: Record<string, string | string[] | boolean | undefined>;
  positionals: string[];
  help: boolean;
}

/** What a command does with its parsed command line. */
export interface CommandRun {
  run(parsed: ParsedCommand): Promise<void>;
}

/** A command: its declared command line, and its implementation loaded only when it runs. */
export interface Command {
  spec: CommandSpec;
  load(): Promise<CommandRun>;
}

/** The `--help` text of a command. */
export function helpText(spec: CommandSpec): string {
  const rows: [string, string][] = [["--config <file>", "YAML or JSON config file; flags override it"]];
  for (const name of spec.settings) {
    const s = settingByFlag(name);
    if (!s) throw new Error(`unknown setting flag ${name}`);
    const range = s.oneOf ? ` (${s.oneOf.join("|")})` : rangeText(s) ? ` ${rangeText(s)}` : "";
    rows.push([`--${s.flag} <${s.type === "strings" ? "text" : s.type}>`, `${s.help}${range} [${s.path}]`]);
  }
  for (const f of spec.flags ?? [])
    rows.push([f.type === "boolean" ? `--${f.name}` : `--${f.name} <value>`, f.help]);
  rows.push(["-h, --help", "show this help"]);
  const width = Math.max(...rows.map(([a]) => a.length)) + 2;
  return `${spec.summary}\n\nUsage: ${spec.usage}\n\nOptions:\n${rows.map(([a, b]) => `  ${a.padEnd(width)}${b}`).join("\n")}\n`;
}

/** Parse argv (after the command name) against a spec; bad flags throw ConfigError. */
export function parseCommand(spec: CommandSpec, argv: string[]): ParsedCommand {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
  };
  for (const name of spec.settings) {
    const s = settingByFlag(name);
    options[name] = { type: "string", multiple: s?.type === "strings" };
  }
  for (const f of spec.flags ?? []) options[f.name] = { type: f.type, multiple: f.multiple ?? false };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (cause) {
    throw new ConfigError(`${(cause as Error).message.replace(/\. To specify.*$/s, "")}`, { cause });
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;
  if (values.help) return { config: loadConfig(undefined, {}), flags: {}, positionals: [], help: true };
  const expected = spec.positionals ?? 0;
  if (parsed.positionals.length !== expected) {
    throw new ConfigError(
      `expected ${expected} argument(s), got ${parsed.positionals.length}${parsed.positionals.length ? ` (${parsed.positionals.join(" ")})` : ""}`,
    );
  }
  const settingValues: Record<string, unknown> = {};
  for (const name of spec.settings) settingValues[name] = values[name];
  const flags: ParsedCommand["flags"] = {};
  for (const f of spec.flags ?? []) flags[f.name] = values[f.name];
  return {
    config: loadConfig(values.config as string | undefined, settingValues),
    flags,
    positionals: parsed.positionals,
    help: false,
  };
}
