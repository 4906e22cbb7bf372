/**
 * Messages as plain JSON objects for files and scripts (metrics.jsonl, `--json`): every field
 * present, 64-bit integers as JSON numbers, non-finite doubles as null. Why not protobuf JSON:
 * it leaves out fields at their zero value and writes uint64 as strings, so `jq '.step + 1'`
 * fails and pandas reads a column of strings. Field names stay protobuf JSON's lowerCamelCase,
 * and protobuf JSON parsers still read these objects back (they accept numbers for 64-bit
 * fields and null for a default).
 */
import { type DescMessage, type MessageShape, ScalarType, toJson } from "@bufbuild/protobuf";

const INT64 = new Set([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);
const FLOAT = new Set([ScalarType.DOUBLE, ScalarType.FLOAT]);

function plainScalar(scalar: ScalarType, v: unknown): unknown {
  if (INT64.has(scalar) && typeof v === "string") return Number(v);
  if (FLOAT.has(scalar) && typeof v === "string") return null; // "NaN", "Infinity", "-Infinity"
  return v;
}

/**
 * A message as a plain object (see the file comment): top-level scalar fields and lists of
 * scalars are converted; nested messages are converted the same way.
 */
export function plainJson<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
): Record<string, unknown> {
  const json = toJson(schema, message, { alwaysEmitImplicit: true }) as Record<string, unknown>;
  return plainFields(schema, json);
}

function plainFields(schema: DescMessage, json: Record<string, unknown>): Record<string, unknown> {
  for (const field of schema.fields) {
    const v = json[field.jsonName];
    if (v === undefined) continue;
    if (field.fieldKind === "scalar") json[field.jsonName] = plainScalar(field.scalar, v);
    else if (field.fieldKind === "list" && field.listKind === "scalar" && Array.isArray(v)) {
      json[field.jsonName] = v.map((x) => plainScalar(field.scalar, x));
    } else if (field.fieldKind === "message" && typeof v === "object" && v !== null) {
      plainFields(field.message, v as Record<string, unknown>);
    }
  }
  return json;
}
