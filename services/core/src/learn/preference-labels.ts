/**
 * Preference labels as JSONL (docs/reward-model.md#labels-file): one object per line,
 * {"prompt", "chosen", "rejected", "labeller": {"id", "version", "modelHash"}, "margin"?}.
 * `rlaif label` writes them, `rlaif train-rm` reads them; here once so both (and other tools'
 * files) meet the same checks, with the line and field named on a bad line.
 */
import { readFileSync } from "node:fs";
import { ConfigError } from "../errors.js";

/** Who decided a preference: a FeedbackService's provenance (or the judge's). */
export interface LabellerInfo {
  id: string;
  version: string;
  /** Model or rubric hash of a model-based labeller; "" for rules. */
  modelHash: string;
}

/** One labelled pair: `chosen` was preferred to `rejected` as completions of `prompt`. */
export interface PreferenceLabel {
  prompt: string;
  chosen: string;
  rejected: string;
  labeller: LabellerInfo;
  /** score(chosen) − score(rejected) when the labeller scores (absent for a pairwise judge). */
  margin?: number;
}

/** The label as one JSONL line (no newline), fields in the documented order. */
export function labelLine(label: PreferenceLabel): string {
  const { prompt, chosen, rejected, labeller, margin } = label;
  return JSON.stringify({
    prompt,
    chosen,
    rejected,
    labeller: { id: labeller.id, version: labeller.version, modelHash: labeller.modelHash },
    ...(margin === undefined ? {} : { margin }),
  });
}

function field(obj: Record<string, unknown>, name: string, where: string): string {
  const v = obj[name];
  if (typeof v !== "string") throw new ConfigError(`${where}: "${name}" must be a string`);
  return v;
}

/** One line parsed and checked; `where` names it ("labels.jsonl line 3") in the error. */
export function parseLabelLine(line: string, where: string): PreferenceLabel {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (cause) {
    throw new ConfigError(`${where}: not JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new ConfigError(`${where}: must be a JSON object`);
  const o = value as Record<string, unknown>;
  const lab = o.labeller;
  if (typeof lab !== "object" || lab === null || Array.isArray(lab))
    throw new ConfigError(`${where}: "labeller" must be an object {"id","version","modelHash"}`);
  const l = lab as Record<string, unknown>;
  const label: PreferenceLabel = {
    prompt: field(o, "prompt", where),
    chosen: field(o, "chosen", where),
    rejected: field(o, "rejected", where),
    labeller: {
      id: field(l, "id", `${where} labeller`),
      version: field(l, "version", `${where} labeller`),
      modelHash: field(l, "modelHash", `${where} labeller`),
    },
  };
  if (o.margin !== undefined) {
    if (typeof o.margin !== "number" || !Number.isFinite(o.margin))
      throw new ConfigError(`${where}: "margin" must be a finite number when given`);
    label.margin = o.margin;
  }
  return label;
}

/** Every label of a JSONL file (blank lines skipped); ConfigError naming the file and line. */
export function readLabels(file: string): PreferenceLabel[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    throw new ConfigError(`cannot read --labels file ${file}: ${(cause as Error).message}`, { cause });
  }
  const labels: PreferenceLabel[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() !== "") labels.push(parseLabelLine(line, `${file} line ${i + 1}`));
  });
  if (labels.length === 0)
    throw new ConfigError(`--labels file ${file} has no labels (one JSON object a line)`);
  return labels;
}
