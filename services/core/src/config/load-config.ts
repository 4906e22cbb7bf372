/**
 * Builds the effective configuration: defaults, then a YAML or JSON file, then flags. Every
 * problem becomes a ConfigError whose message names the setting and says what to fix. Paths in a
 * config file (`services.checkpoint`, `out`) resolve against the file's folder; paths given as
 * flags resolve against the working directory.
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../errors.js";
import { didYouMean } from "./did-you-mean.js";
import { getPath, setPath } from "./object-path.js";
import {
  defaultConfig,
  type RlaifConfig,
  SETTINGS,
  type Setting,
  settingByFlag,
  settingProblem,
} from "./settings.js";

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Convert one raw value (from a file, or a flag's text) to the setting's type and check it with
 * the schema's check, so a flag, a config file and a RunConfig field refuse it with one reason.
 */
export function coerceSetting(s: Setting, raw: unknown, where: string): unknown {
  let value: unknown = raw;
  if (s.type === "strings") value = Array.isArray(raw) ? raw : [raw];
  else if ((s.type === "int" || s.type === "number") && typeof raw === "string" && raw.trim() !== "") {
    value = Number(raw);
    if (Number.isNaN(value)) value = raw;
  }
  const problem = settingProblem(s, value);
  if (problem) throw new ConfigError(`${where}${problem.at}: ${problem.reason}`);
  return value;
}

/** Read a config file (YAML or JSON by content) into a plain object. */
export function readConfigFile(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new ConfigError(`cannot read config file ${path}: ${(cause as Error).message}`, { cause });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (cause) {
    throw new ConfigError(`config file ${path} is not valid YAML/JSON: ${(cause as Error).message}`, {
      cause,
    });
  }
  if (doc === null || doc === undefined) return {};
  if (!isObject(doc))
    throw new ConfigError(`config file ${path} must hold a mapping (key: value), not a list`);
  return doc;
}

function checkUnknownKeys(doc: Json, prefix: string, file: string): void {
  const known = SETTINGS.map((s) => s.path);
  const sections = new Set(known.map((p) => p.split(".")[0]));
  for (const [k, v] of Object.entries(doc)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (known.includes(path)) continue;
    if (!prefix && sections.has(k) && isObject(v)) {
      checkUnknownKeys(v, k, file);
      continue;
    }
    const hint = didYouMean(path, known) || " (`rlaif <command> --help` lists the settings)";
    throw new ConfigError(`${file}: unknown setting "${path}"${hint}`);
  }
}

/** Paths of the settings a config file or flag set, per config `loadConfig` returned. */
const EXPLICIT = new WeakMap<RlaifConfig, ReadonlySet<string>>();

/**
 * The settings (dotted paths, e.g. `run.learningRate`) that the config file or a flag set, as
 * opposed to defaults. Why: `rlaif train --resume` keeps the run's saved settings and must tell
 * a setting the user asked to change (refused unless allowed) from one left at its default.
 * Empty for a config not made by {@link loadConfig}.
 */
export function explicitSettings(config: RlaifConfig): ReadonlySet<string> {
  return EXPLICIT.get(config) ?? new Set();
}

/**
 * The effective configuration.
 * @param file optional path of a YAML/JSON config file
 * @param flags flag values as parsed from the command line (flag name → raw value)
 */
export function loadConfig(file: string | undefined, flags: Record<string, unknown>): RlaifConfig {
  const config = defaultConfig() as unknown as Json;
  const explicit = new Set<string>();
  if (file) {
    const doc = readConfigFile(file);
    checkUnknownKeys(doc, "", file);
    for (const s of SETTINGS) {
      const raw = getPath(doc, s.path);
      if (raw === undefined) continue;
      const value = coerceSetting(s, raw, `${file}: ${s.path}`);
      // A path in a config file is relative to the file's folder, not to where the command runs.
      setPath(
        config,
        s.path,
        s.isPath && typeof value === "string" && value && !isAbsolute(value)
          ? resolve(dirname(file), value)
          : value,
      );
      explicit.add(s.path);
    }
  }
  for (const [flag, raw] of Object.entries(flags)) {
    const s = settingByFlag(flag);
    if (!s || raw === undefined) continue;
    setPath(config, s.path, coerceSetting(s, raw, `--${flag}`));
    explicit.add(s.path);
  }
  EXPLICIT.set(config as unknown as RlaifConfig, explicit);
  return config as unknown as RlaifConfig;
}
