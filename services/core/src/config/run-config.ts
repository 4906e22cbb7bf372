/**
 * Both mappings between run settings and the API's `rlaif.common.v1.RunConfig`, derived from the
 * settings schema (settings.ts): each setting names its RunConfig field, so adding a setting is
 * one declaration there, not an edit here. Why derived: a hand-written mapping once masked seeds
 * to 32 bits and read an unset temperature as 0 (greedy).
 */
import {
  type DescEnum,
  type DescField,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  ScalarType,
} from "@bufbuild/protobuf";
import { RunConfigSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import { getPath, setPath } from "./object-path.js";
import { RUN_SETTINGS, type RunSettings, type Setting } from "./settings.js";

type Json = Record<string, unknown>;

/** The proto enum value name's suffix of a choice: `moving-average` → `MOVING_AVERAGE`. */
function enumLocalName(choice: string): string {
  return choice.toUpperCase().replace(/-/g, "_");
}

/** The enum number of a choice (throws at load when the proto lacks one: a schema/proto drift). */
export function choiceToEnum(e: DescEnum, choice: string): number {
  const v = e.values.find((x) => x.localName === enumLocalName(choice));
  if (!v) throw new TypeError(`${e.typeName} has no value for choice "${choice}"`);
  return v.number;
}

/** The choice of an enum number; undefined for UNSPECIFIED (= the default) or an unknown number. */
export function enumToChoice(s: Setting, n: number): string | undefined {
  if (n === 0 || !s.protoEnum || !s.oneOf) return undefined;
  const name = s.protoEnum.values.find((x) => x.number === n)?.localName;
  return s.oneOf.find((c) => enumLocalName(c) === name);
}

// Every choice of every enum setting must exist in the proto: checked once, at load.
for (const s of RUN_SETTINGS) {
  if (s.oneOf && s.protoEnum) for (const c of s.oneOf) choiceToEnum(s.protoEnum, c);
}

/**
 * A RunConfig field's value in the settings' terms, or undefined when the field is unset (an
 * absent optional scalar, an UNSPECIFIED enum, an empty list). An enum number with no choice
 * stays a number and a uint64 that is not a safe integer stays a bigint, so a check can say what
 * was sent.
 */
export function fieldValue(s: Setting, raw: unknown): unknown {
  if (raw === undefined) return undefined;
  if (s.protoEnum) return raw === 0 ? undefined : (enumToChoice(s, raw as number) ?? raw);
  if (typeof raw === "bigint") return raw <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(raw) : raw;
  if (Array.isArray(raw)) return raw.length ? [...raw] : undefined;
  return raw;
}

/**
 * Run settings from an API RunConfig: every set field wins, every unset one keeps `base`.
 * The config must have passed the RunConfig rules (grpc/rules.ts), which refuse what the
 * settings schema refuses.
 */
export function settingsFromRunConfig(
  c: MessageShape<typeof RunConfigSchema>,
  base: RunSettings,
): RunSettings {
  const out: Json = { ...base, prompts: [...base.prompts] };
  for (const s of RUN_SETTINGS) {
    const v = fieldValue(s, getPath(c, s.proto));
    if (v !== undefined) out[s.key] = typeof v === "bigint" ? Number(v) : v;
  }
  return out as unknown as RunSettings;
}

/** The fields along a camelCase RunConfig path (e.g. `sampling.topP`), from the descriptor. */
function fieldsAt(path: string): DescField[] {
  const fields: DescField[] = [];
  let desc: DescMessage | undefined = RunConfigSchema;
  for (const k of path.split(".")) {
    const f: DescField | undefined = desc?.fields.find((x) => x.localName === k);
    if (!f) throw new TypeError(`RunConfig has no field ${path}`);
    fields.push(f);
    desc = f.fieldKind === "message" ? f.message : undefined;
  }
  return fields;
}

/** The API RunConfig of run settings, every field set (for clients such as `rlaif up`). */
export function runConfigFromSettings(settings: RunSettings): MessageInitShape<typeof RunConfigSchema> {
  const out: Json = {};
  for (const s of RUN_SETTINGS) {
    const v = settings[s.key];
    const leaf = fieldsAt(s.proto).at(-1) as DescField;
    const is64 =
      leaf.fieldKind === "scalar" && (leaf.scalar === ScalarType.UINT64 || leaf.scalar === ScalarType.INT64);
    const wire = s.protoEnum
      ? choiceToEnum(s.protoEnum, v as string)
      : is64
        ? BigInt(v as number)
        : Array.isArray(v)
          ? [...v]
          : v;
    setPath(out, s.proto, wire);
  }
  return out as MessageInitShape<typeof RunConfigSchema>;
}

/** The API path of a run setting, for error messages: `config.learning_rate`, `config.sampling.top_k`. */
export function runConfigField(key: keyof RunSettings): string {
  const s = RUN_SETTINGS.find((x) => x.key === key);
  if (!s) throw new TypeError(`run setting ${String(key)} has no RunConfig field`);
  return `config.${protoFieldPath(s.proto)}`;
}

/** The proto (snake_case) path of a camelCase RunConfig field path: `sampling.topP` → `sampling.top_p`. */
export function protoFieldPath(path: string): string {
  return fieldsAt(path)
    .map((f) => f.name)
    .join(".");
}
