/**
 * The deployment tree as a cluster would get it: `kubectl kustomize <dir>` (kustomize v5, the one
 * `kubectl apply -k` runs) renders it, so the manifest tests check what is really applied rather
 * than a re-implementation of kustomize. Also the small accessors the manifest lint needs on the
 * rendered objects.
 */
import { execFileSync } from "node:child_process";
import { parseAllDocuments } from "yaml";

/** A rendered Kubernetes object (plain JSON). */
export interface KObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Renders the kustomization in `dir` with `kubectl kustomize`; throws with kubectl's message when
 * it refuses the tree, and when its output holds anything but named Kubernetes objects.
 */
export function renderKustomize(dir: string): KObject[] {
  let out: string;
  try {
    out = execFileSync("kubectl", ["kustomize", dir], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? "").trim();
    throw new Error(`kubectl kustomize ${dir} failed: ${stderr || (err as Error).message}`, { cause: err });
  }
  const objects: KObject[] = [];
  for (const [i, doc] of parseAllDocuments(out).entries()) {
    if (doc.errors.length > 0) throw new Error(`${dir} document ${i}: ${doc.errors[0]?.message}`);
    const o = doc.toJS() as unknown;
    if (o === null || o === undefined) continue;
    const meta = isObject(o) ? o.metadata : undefined;
    if (!isObject(o) || typeof o.apiVersion !== "string" || typeof o.kind !== "string" || !isObject(meta)) {
      throw new Error(`${dir} document ${i}: not a Kubernetes object with apiVersion, kind and metadata`);
    }
    if (typeof meta.name !== "string")
      throw new Error(`${dir} document ${i}: ${o.kind} without metadata.name`);
    objects.push(o as KObject);
  }
  return objects;
}

/** `Kind/namespace/name` (namespace empty when unset). */
export function objectId(o: KObject): string {
  return `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
}

/** Every container (init containers included) of a workload's pod template. */
export function containersOf(o: KObject): JsonObject[] {
  const spec = o.spec;
  const template = isObject(spec) ? spec.template : undefined;
  const ps = isObject(template) ? template.spec : undefined;
  if (!isObject(ps)) return [];
  return [
    ...((ps.initContainers as JsonObject[] | undefined) ?? []),
    ...((ps.containers as JsonObject[] | undefined) ?? []),
  ];
}

/** Splits `name[:tag][@digest]` (a registry port's colon is not a tag). */
export function parseImage(image: string): { name: string; tag?: string; digest?: string } {
  let rest = image;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(":");
  const slash = rest.lastIndexOf("/");
  if (colon > slash) {
    return { name: rest.slice(0, colon), tag: rest.slice(colon + 1), ...(digest ? { digest } : {}) };
  }
  return { name: rest, ...(digest ? { digest } : {}) };
}
