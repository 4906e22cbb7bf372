/**
 * The version of rlaif, read once from the repository's package.json. Why here and not a
 * constant: package.json is the one place a release bumps, and `rlaif --version`, run
 * provenance (a run's config.json) and logs must all report the same string.
 */
import { readFileSync } from "node:fs";

/** The `version` field of the repository's package.json, e.g. "0.1.0". */
export const RLAIF_VERSION: string = (
  JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }
).version;
