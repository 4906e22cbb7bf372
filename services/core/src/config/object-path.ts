/**
 * Dotted-path access into plain objects (`run.klCoef`, `sampling.topP`): the settings schema names
 * every setting by such a path, and the config loader and the RunConfig mapping read and write
 * them, so they share these two functions.
 */

type Json = Record<string, unknown>;

/** The value at `path`, or undefined when any step of it is missing. */
export function getPath(obj: unknown, path: string): unknown {
  return path
    .split(".")
    .reduce<unknown>((o, k) => (typeof o === "object" && o !== null ? (o as Json)[k] : undefined), obj);
}

/** Set the value at `path`, creating the objects along it. */
export function setPath(obj: Json, path: string, value: unknown): void {
  const keys = path.split(".");
  const last = keys.pop() as string;
  let cur = obj;
  for (const k of keys) {
    if (typeof cur[k] !== "object" || cur[k] === null) cur[k] = {};
    cur = cur[k] as Json;
  }
  cur[last] = value;
}
