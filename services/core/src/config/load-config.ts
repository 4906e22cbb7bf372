/**
 * Builds the effective configuration: defaults, then a YAML or JSON file, then flags. Every
 * problem becomes a ConfigError whose message names the setting and says what to fix.
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../errors.js";
import { defaultConfig, type RlaifConfig } from "./defaults.js";
import { SETTINGS, type Setting, settingByFlag } from "./settings.js";

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function getPath(obj: Json, path: string): unknown {
  return path.split(".").reduce<unknown>((o, k) => (isObject(o) ? o[k] : undefined), obj);
}

function setPath(obj: Json, path: string, value: unknown): void {
  const keys = path.split(".");
  const last = keys.pop() as string;
  let cur = obj;
  for (const k of keys) cur = cur[k] as Json;
  cur[last] = value;
}

/** Convert and check one raw value (from a file or a flag) against its setting. */
export function coerceSetting(s: Setting, raw: unknown, where: string): unknown {
  const fail = (why: string): never => {
    throw new ConfigError(`${where}: ${why}`);
  };
  if (s.type === "strings") {
    const list = Array.isArray(raw) ? raw : [raw];
    return list.map((x) => (typeof x === "string" ? x : fail(`expected text, got ${JSON.stringify(x)}`)));
  }
  if (s.type === "string") {
    if (typeof raw !== "string") return fail(`expected text, got ${JSON.stringify(raw)}`);
    if (s.oneOf && !s.oneOf.includes(raw)) return fail(`must be one of ${s.oneOf.join(", ")}, got "${raw}"`);
    if (s.pattern && !s.pattern.test(raw)) return fail(`must look like ${s.patternHelp}, got "${raw}"`);
    return raw;
  }
  const n =
    typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : Number.NaN;
  if (!Number.isFinite(n)) return fail(`expected a number, got ${JSON.stringify(raw)}`);
  if (s.type === "int" && !Number.isInteger(n)) return fail(`expected a whole number, got ${n}`);
  if (s.min !== undefined && n < s.min) return fail(`must be at least ${s.min}, got ${n}`);
  if (s.max !== undefined && n > s.max) return fail(`must be at most ${s.max}, got ${n}`);
  if (s.below !== undefined && n >= s.below) return fail(`must be below ${s.below}, got ${n}`);
  return n;
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
  const known = new Set(SETTINGS.map((s) => s.path));
  const sections = new Set(SETTINGS.map((s) => s.path.split(".")[0]));
  for (const [k, v] of Object.entries(doc)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (known.has(path)) continue;
    if (!prefix && sections.has(k) && isObject(v)) {
      checkUnknownKeys(v, k, file);
      continue;
    }
    const names = SETTINGS.map((s) => s.path).join(", ");
    throw new ConfigError(`${file}: unknown setting "${path}" (known settings: ${names})`);
  }
}

/**
 * Settings that hold file-system paths. In a config file they resolve against the file's folder,
 * so a config next to its checkpoint works from any current directory; flags resolve against
 * the current directory, as a shell user expects.
 */
export const PATH_SETTINGS: ReadonlySet<string> = new Set(["services.checkpoint", "out"]);

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
      let value = coerceSetting(s, raw, `${file}: ${s.path}`);
      if (PATH_SETTINGS.has(s.path) && typeof value === "string" && value && !isAbsolute(value))
        value = resolve(dirname(file), value);
      setPath(config, s.path, value);
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
