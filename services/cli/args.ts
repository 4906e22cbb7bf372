/**
 * Command-line parsing shared by every command: flags come from the settings table (so a flag,
 * its config-file key and its validation are declared once) plus a command's own flags, and
 * `--help` text is generated from the same declarations. A command with variants (`rlaif serve
 * <service>`) takes the flags of the variant its first argument names.
 */
import { parseArgs } from "node:util";
import { didYouMean } from "../core/src/config/did-you-mean.js";
import { loadConfig } from "../core/src/config/load-config.js";
import { type RlaifConfig, rangeText, SETTINGS, settingByFlag } from "../core/src/config/settings.js";
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
  /** How many more it may take (e.g. an optional run id). */
  optionalPositionals?: number;
  /** Example command lines for `--help`. */
  examples?: readonly string[];
  /**
   * Variants chosen by the first argument (`rlaif serve policy`), each with its own flags and
   * help; the command's own settings and flags then only serve `rlaif serve --help`.
   */
  variants?: Readonly<Record<string, CommandSpec>>;
}

/** Parsed command line: the effective config, the command's own flags, and positionals. */
export interface ParsedCommand {
  config: RlaifConfig;
  flags: Record<string, string | string[] | boolean | undefined>;
  positionals: string[];
  /** `--help` was given: print {@link helpText} of `spec` instead of running. */
  help: boolean;
  /** `--version` was given. */
  version: boolean;
  /** The spec the line was parsed against (the variant's, for a command with variants). */
  spec: CommandSpec;
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

const CONFIG_HELP =
  "YAML or JSON config file; flags override it. Relative paths in it " +
  `(${SETTINGS.filter((s) => s.isPath)
    .map((s) => s.path)
    .join(", ")}) resolve against the file's folder, those in flags against the current directory`;

function table(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([a]) => a.length)) + 2;
  return rows.map(([a, b]) => `  ${a.padEnd(width)}${b}`).join("\n");
}

/** The `--help` text of a command (or of one of its variants). */
export function helpText(spec: CommandSpec): string {
  const head = `${spec.summary}\n\nUsage: ${spec.usage}\n\n`;
  const tail = spec.examples?.length ? `\nExamples:\n${spec.examples.map((e) => `  ${e}`).join("\n")}\n` : "";
  if (spec.variants) {
    const rows = Object.values(spec.variants).map((v): [string, string] => [
      v.name.split(" ").at(-1) as string,
      v.summary,
    ]);
    return `${head}Services:\n${table(rows)}\n\nRun '${spec.usage.split(" <")[0]} <service> --help' for a service's flags.\n${tail}`;
  }
  const rows: [string, string][] = [["--config <file>", CONFIG_HELP]];
  for (const name of spec.settings) {
    const s = settingByFlag(name);
    if (!s) throw new Error(`unknown setting flag ${name}`);
    const range = s.oneOf ? ` (${s.oneOf.join("|")})` : rangeText(s) ? ` ${rangeText(s)}` : "";
    rows.push([`--${s.flag} <${s.type === "strings" ? "text" : s.type}>`, `${s.help}${range} [${s.path}]`]);
  }
  for (const f of spec.flags ?? [])
    rows.push([f.type === "boolean" ? `--${f.name}` : `--${f.name} <value>`, f.help]);
  rows.push(["-v, --version", "print the rlaif version"]);
  rows.push(["-h, --help", "show this help"]);
  return `${head}Options:\n${table(rows)}\n${tail}`;
}

type Options = Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>;

function optionsOf(spec: CommandSpec): Options {
  const options: Options = {
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "v" },
  };
  for (const name of spec.settings) {
    options[name] = { type: "string", multiple: settingByFlag(name)?.type === "strings" };
  }
  for (const f of spec.flags ?? []) options[f.name] = { type: f.type, multiple: f.multiple ?? false };
  for (const v of Object.values(spec.variants ?? {})) Object.assign(options, optionsOf(v));
  return options;
}

/** The option an "unknown option" error of parseArgs names, without dashes or `=value`. */
function unknownOption(err: unknown): string | null {
  const e = err as { code?: string; message?: string };
  if (e.code !== "ERR_PARSE_ARGS_UNKNOWN_OPTION") return null;
  const m = /Unknown option '-{0,2}([^'=]*)/.exec(e.message ?? "");
  return m ? (m[1] as string) : null;
}

function unknownFlagError(name: string, spec: CommandSpec, cause?: unknown): ConfigError {
  const known = Object.keys(optionsOf(spec));
  const dashes = name.length === 1 ? "-" : "--";
  return new ConfigError(
    `unknown flag ${dashes}${name}${didYouMean(name, known, (n) => `--${n}`)}`,
    cause === undefined ? undefined : { cause },
  );
}

/** A flag given on the line that the chosen variant does not take, said as such. */
function checkVariantFlags(values: Record<string, unknown>, parent: CommandSpec, variant: CommandSpec): void {
  const own = optionsOf(variant);
  for (const name of Object.keys(values)) {
    if (own[name]) continue;
    const takers = Object.values(parent.variants ?? {})
      .filter((v) => optionsOf(v)[name])
      .map((v) => v.name);
    const err = unknownFlagError(name, variant);
    throw new ConfigError(
      takers.length
        ? `--${name} is not a flag of ${variant.name}${didYouMean(name, Object.keys(own), (n) => `--${n}`)}; ${takers.join(", ")} take${takers.length === 1 ? "s" : ""} it`
        : err.message,
    );
  }
}

/** Parse argv (after the command name) against a spec; bad flags throw ConfigError. */
export function parseCommand(spec: CommandSpec, argv: string[]): ParsedCommand {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: optionsOf(spec), allowPositionals: true, strict: true });
  } catch (cause) {
    const name = unknownOption(cause);
    if (name !== null) throw unknownFlagError(name, spec, cause);
    throw new ConfigError(`${(cause as Error).message.replace(/\. To specify.*$/s, "")}`, { cause });
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;
  let effective = spec;
  if (spec.variants) {
    const first = parsed.positionals[0];
    const variant = first === undefined ? undefined : spec.variants[first];
    if (variant) {
      checkVariantFlags(values, spec, variant);
      effective = variant;
    } else if (first !== undefined) {
      const names = Object.keys(spec.variants);
      throw new ConfigError(
        `unknown service "${first}"${didYouMean(first, names)}: choose one of ${names.join(", ")}`,
      );
    } else if (!values.help && !values.version) {
      throw new ConfigError(`name a service: ${spec.usage}`);
    }
  }
  const base = { positionals: parsed.positionals, spec: effective };
  if (values.help || values.version) {
    return {
      config: loadConfig(undefined, {}),
      flags: {},
      help: !!values.help,
      version: !values.help,
      ...base,
    };
  }
  const expected = effective.positionals ?? 0;
  const most = expected + (effective.optionalPositionals ?? 0);
  if (parsed.positionals.length < expected || parsed.positionals.length > most) {
    throw new ConfigError(
      `expected ${expected === most ? expected : `${expected}..${most}`} argument(s), got ${parsed.positionals.length}${parsed.positionals.length ? ` (${parsed.positionals.join(" ")})` : ""}`,
    );
  }
  const settingValues: Record<string, unknown> = {};
  for (const name of effective.settings) settingValues[name] = values[name];
  const flags: ParsedCommand["flags"] = {};
  for (const f of effective.flags ?? []) flags[f.name] = values[f.name];
  return {
    config: loadConfig(values.config as string | undefined, settingValues),
    flags,
    help: false,
    version: false,
    ...base,
  };
}
