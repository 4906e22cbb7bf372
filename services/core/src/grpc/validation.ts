/**
 * Declarative request validation: each API message gets one rule object (see rules.ts) so its
 * limits live in one place, next to each other, instead of being scattered through handlers.
 *
 *   const rules = defineRules(GenerateRequestSchema, {
 *     prompts: [minItems(1), maxItems(256), eachString(nonEmpty(), maxBytes(4096))],
 *     "sampling.temperature": [range(0, 10)],
 *   });
 *   validate(rules, request); // throws ValidationError("prompts[3]", "must not be empty")
 *
 * Keys are the TypeScript (camelCase) field names, checked by the compiler; error paths use the
 * proto field names (`samples_per_prompt`), because clients in any language read them.
 */
import type { DescEnum, DescMessage, Message, MessageShape } from "@bufbuild/protobuf";
import { ValidationError } from "../errors.js";

/** One failed check. `at` is appended to the checked field's path: "" for the value itself, "[3]", ".top_p". */
export interface Violation {
  readonly at: string;
  readonly reason: string;
}

/** A check of one value; returns undefined when the value is acceptable. Compose them in arrays. */
export type Rule<T> = (value: T) => Violation | undefined;

/** The rules of one message type, ready to check messages of it (built by `defineRules`). */
export interface RuleSet<Desc extends DescMessage = DescMessage> {
  readonly schema: Desc;
  /** The first violation, its `at` being the full proto path (e.g. "sampling.temperature"), or undefined. */
  check(message: MessageShape<Desc>): Violation | undefined;
}

type Fields<M> = Exclude<keyof M, "$typeName" | "$unknown"> & string;
type Depth = [unknown, unknown, unknown];
/** Dotted camelCase paths into a message, through singular message fields (3 levels deep). */
export type FieldPath<M, D extends unknown[] = []> = D["length"] extends Depth["length"]
  ? never
  : {
      [K in Fields<M>]: NonNullable<M[K]> extends Message
        ? K | `${K}.${FieldPath<NonNullable<M[K]>, [...D, unknown]>}`
        : K;
    }[Fields<M>];
/** The type of the value at a dotted path. */
export type ValueAt<M, P extends string> = P extends `${infer K}.${infer R}`
  ? K extends keyof M
    ? ValueAt<NonNullable<M[K]>, R>
    : never
  : P extends keyof M
    ? M[P]
    : never;
/** The rule object of a message: for each (dotted) field, the rules its value must pass, in order. */
export type RuleMap<M> = { readonly [P in FieldPath<M>]?: ReadonlyArray<Rule<NonNullable<ValueAt<M, P>>>> };

/**
 * Bind rules to a message type. Keys are resolved against the descriptor now, so a rule for a
 * field that does not exist fails at module load, not silently at request time.
 */
export function defineRules<Desc extends DescMessage>(
  schema: Desc,
  rules: RuleMap<MessageShape<Desc>>,
): RuleSet<Desc> {
  const entries = Object.entries(rules as Record<string, ReadonlyArray<Rule<unknown>> | undefined>).map(
    ([key, list]) => {
      const keys = key.split(".");
      const names: string[] = [];
      let desc: DescMessage | undefined = schema;
      keys.forEach((k, i) => {
        const field = desc?.fields.find((f) => f.localName === k);
        if (!field || (i < keys.length - 1 && field.fieldKind !== "message")) {
          throw new TypeError(`rules for ${schema.typeName}: "${key}" is not a field path`);
        }
        names.push(field.name);
        desc = field.fieldKind === "message" ? field.message : undefined;
      });
      return { keys, path: names.join("."), rules: list ?? [] };
    },
  );
  return {
    schema,
    check(message) {
      for (const { keys, path, rules: list } of entries) {
        let value: unknown = message;
        for (const k of keys) {
          value = value === undefined ? undefined : (value as Record<string, unknown>)[k];
        }
        // A rule on a field inside an unset sub-message does not apply (unset = server default);
        // `required()` on the sub-message itself is how to demand it.
        if (value === undefined && keys.length > 1) continue;
        // An unset `optional` scalar means "use the default": only `required()` applies to it.
        if (value === undefined && !list.includes(REQUIRED as Rule<unknown>)) continue;
        for (const rule of list) {
          const v = rule(value);
          if (v) return { at: `${path}${v.at}`, reason: v.reason };
        }
      }
      return undefined;
    },
  };
}

/** Check a message against its rules; throws ValidationError(field path, reason) on the first violation. */
export function validate<Desc extends DescMessage>(rules: RuleSet<Desc>, message: MessageShape<Desc>): void {
  const v = rules.check(message);
  if (v) throw new ValidationError(v.at, v.reason);
}

/** Numbers in reasons: float32 fields carry noise (0.1 → 0.10000000149), so print 7 significant digits. */
function num(x: number): string {
  return Number.isFinite(x) && !Number.isInteger(x) ? String(Number(x.toPrecision(7))) : String(x);
}

/** A rule from a predicate and a reason; for one-off checks such as "text or tokens present". */
export function check<T>(ok: (value: T) => boolean, reason: string | ((value: T) => string)): Rule<T> {
  return (value) =>
    ok(value) ? undefined : { at: "", reason: typeof reason === "string" ? reason : reason(value) };
}

/** A repeated field has at least `n` items (e.g. a batch must not be empty). */
export function minItems(n: number): Rule<readonly unknown[]> {
  return check(
    (v) => v.length >= n,
    (v) => `must have at least ${n} item${n === 1 ? "" : "s"}, got ${v.length}`,
  );
}

/** A repeated field has at most `n` items: bounds the work and memory one call can ask for. */
export function maxItems(n: number): Rule<readonly unknown[]> {
  return check(
    (v) => v.length <= n,
    (v) => `must have at most ${n} items, got ${v.length}`,
  );
}

/** A repeated field has exactly `n` items (e.g. one score per scored item). */
export function exactItems(n: number): Rule<readonly unknown[]> {
  return check(
    (v) => v.length === n,
    (v) => `must have exactly ${n} item${n === 1 ? "" : "s"}, got ${v.length}`,
  );
}

/** A number lies in an interval; NaN never does. Bounds are inclusive unless marked exclusive. */
export function range(
  lo: number,
  hi: number,
  opts: { minExclusive?: boolean; maxExclusive?: boolean } = {},
): Rule<number> {
  const { minExclusive = false, maxExclusive = false } = opts;
  const text =
    minExclusive || maxExclusive
      ? `must be in ${minExclusive ? "(" : "["}${lo}, ${hi}${maxExclusive ? ")" : "]"}`
      : `must be between ${lo} and ${hi}`;
  return check(
    (v) => (minExclusive ? v > lo : v >= lo) && (maxExclusive ? v < hi : v <= hi),
    (v) => `${text}, got ${num(v)}`,
  );
}

/** A number is at least `n` (NaN fails). */
export function min(n: number): Rule<number> {
  return check(
    (v) => v >= n,
    (v) => `must be at least ${n}, got ${num(v)}`,
  );
}

/** A number is at most `n` (NaN fails). */
export function max(n: number): Rule<number> {
  return check(
    (v) => v <= n,
    (v) => `must be at most ${n}, got ${num(v)}`,
  );
}

/** A number is finite: NaN or ±Infinity from a buggy client would poison an average or a gradient. */
export function finite(): Rule<number> {
  return check(
    (v) => Number.isFinite(v),
    (v) => `must be finite, got ${num(v)}`,
  );
}

/** A string or list is not empty. */
export function nonEmpty(): Rule<string | readonly unknown[]> {
  return check((v) => v.length > 0, "must not be empty");
}

/** A string's UTF-8 encoding is at most `n` bytes (the byte-level tokenizer's unit, and the wire's). */
export function maxBytes(n: number): Rule<string> {
  return check(
    (v) => v.length <= n / 3 || Buffer.byteLength(v, "utf8") <= n,
    (v) => `must be at most ${n} bytes of UTF-8, got ${Buffer.byteLength(v, "utf8")}`,
  );
}

/** A string matches a regular expression (anchor it); `help` describes it to humans. */
export function pattern(re: RegExp, help?: string): Rule<string> {
  const shown = (s: string) => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
  return check(
    (v) => re.test(v),
    (v) => `must be ${help ?? `matching /${re.source}/`}, got ${shown(v)}`,
  );
}

/** A message field is set: proto3 cannot express "required", so the API says it here. */
export function required(): Rule<unknown> {
  return REQUIRED;
}

/** The one `required()` rule, so the checker can tell it apart from rules on a value. */
const REQUIRED: Rule<unknown> = check((v) => v !== undefined && v !== null, "is required");

/** An enum field holds one of the enum's declared values, not an unknown number from a newer client. */
export function definedEnum(desc: DescEnum): Rule<number> {
  const known = new Set(desc.values.map((v) => v.number));
  const names = desc.values.map((v) => v.name).join(", ");
  return check(
    (v) => known.has(v),
    (v) => `must be one of ${names}, got ${v}`,
  );
}

/** Apply rules to every item of a repeated field; violations name the item (`prompts[3]`). */
export function each<T>(...rules: ReadonlyArray<Rule<T>>): Rule<readonly T[]> {
  return (list) => {
    for (let i = 0; i < list.length; i++) {
      for (const rule of rules) {
        const v = rule(list[i] as T);
        if (v) return { at: `[${i}]${v.at}`, reason: v.reason };
      }
    }
    return undefined;
  };
}

/** `each` for repeated strings; spelled out so `eachString(nonEmpty(), maxBytes(n))` infers cleanly. */
export function eachString(...rules: ReadonlyArray<Rule<string>>): Rule<readonly string[]> {
  return each<string>(...rules);
}

/** Apply a sub-message's rule set to a message field (skipped when unset; add `required()` to demand it). */
export function nested<Desc extends DescMessage>(rules: RuleSet<Desc>): Rule<MessageShape<Desc> | undefined> {
  return (value) => {
    if (value === undefined) return undefined;
    const v = rules.check(value);
    return v ? { at: `.${v.at}`, reason: v.reason } : undefined;
  };
}
