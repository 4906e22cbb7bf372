/**
 * Offline checks of rendered Kubernetes objects that schema validation does not do:
 *
 * - `unknownFields`: a strict field check (what `kubeconform -strict` does). kubernetes-models'
 *   `validate()` accepts fields the API does not know, so a typo such as `readinesProbe` would pass
 *   it and be dropped by the API server. The known fields are read from the packages' own type
 *   declarations (.d.ts) with the TypeScript parser, so they always match the validated schema.
 * - `flowAllowed`: NetworkPolicy semantics (pod/namespace selectors, policy types, ports) for
 *   checking which pod-to-pod flows a set of policies opens.
 * - `parseQuantity` and `matchesSelector`: Kubernetes quantities and label selectors.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import ts from "typescript";

// ---- quantities and selectors ------------------------------------------------------------------

const SUFFIX: Record<string, number> = {
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** A Kubernetes quantity ("250m", "1", 2, "512Mi", "8Gi") as a number of base units. */
export function parseQuantity(q: unknown): number {
  if (typeof q === "number") return q;
  const m = typeof q === "string" ? /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(q) : null;
  if (!m) throw new Error(`not a quantity: ${JSON.stringify(q)}`);
  return Number(m[1]) * (SUFFIX[m[2] ?? ""] as number);
}

/** A label selector (matchLabels + matchExpressions); `{}` selects everything. */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** Whether `labels` satisfy `selector`. */
export function matchesSelector(labels: Record<string, string>, selector: LabelSelector): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const inValues = has && (e.values ?? []).includes(labels[e.key] as string);
    const ok =
      e.operator === "In"
        ? inValues
        : e.operator === "NotIn"
          ? !inValues
          : e.operator === "Exists"
            ? has
            : e.operator === "DoesNotExist"
              ? !has
              : (() => {
                  throw new Error(`unknown selector operator ${e.operator}`);
                })();
    if (!ok) return false;
  }
  return true;
}

// ---- NetworkPolicy evaluation ------------------------------------------------------------------

/** A pod as NetworkPolicy sees it. */
export interface PodEndpoint {
  name: string;
  namespace: string;
  namespaceLabels: Record<string, string>;
  labels: Record<string, string>;
  /** Container ports, for policies that name a port. */
  ports: { name?: string; containerPort: number; protocol?: string }[];
}

interface PolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: unknown;
}
interface PolicyPort {
  port?: number | string;
  endPort?: number;
  protocol?: string;
}
interface PolicyRule {
  from?: PolicyPeer[];
  to?: PolicyPeer[];
  ports?: PolicyPort[];
}
/** The parts of a networking.k8s.io/v1 NetworkPolicy the evaluator reads. */
export interface NetworkPolicyLike {
  metadata: { name: string; namespace?: string };
  spec: {
    podSelector: LabelSelector;
    policyTypes?: ("Ingress" | "Egress")[];
    ingress?: PolicyRule[];
    egress?: PolicyRule[];
  };
}

function policyTypes(p: NetworkPolicyLike): string[] {
  if (p.spec.policyTypes) return p.spec.policyTypes;
  return p.spec.egress ? ["Ingress", "Egress"] : ["Ingress"];
}

function peerMatches(peer: PolicyPeer, policyNamespace: string, pod: PodEndpoint): boolean {
  if (peer.ipBlock !== undefined) return false; // CIDRs never select pods by label
  if (peer.namespaceSelector !== undefined) {
    if (!matchesSelector(pod.namespaceLabels, peer.namespaceSelector)) return false;
  } else if (pod.namespace !== policyNamespace) {
    return false;
  }
  return peer.podSelector === undefined || matchesSelector(pod.labels, peer.podSelector);
}

function portMatches(
  ports: PolicyPort[] | undefined,
  dst: PodEndpoint,
  port: number,
  protocol: string,
): boolean {
  if (!ports || ports.length === 0) return true;
  return ports.some((p) => {
    if ((p.protocol ?? "TCP") !== protocol) return false;
    if (p.port === undefined) return true;
    if (typeof p.port === "string") {
      return dst.ports.some(
        (cp) => cp.name === p.port && cp.containerPort === port && (cp.protocol ?? "TCP") === protocol,
      );
    }
    return p.endPort !== undefined ? port >= p.port && port <= p.endPort : port === p.port;
  });
}

function directionAllows(
  policies: NetworkPolicyLike[],
  direction: "Ingress" | "Egress",
  subject: PodEndpoint,
  peer: PodEndpoint,
  dst: PodEndpoint,
  port: number,
  protocol: string,
): boolean {
  const selecting = policies.filter(
    (p) =>
      (p.metadata.namespace ?? "") === subject.namespace &&
      policyTypes(p).includes(direction) &&
      matchesSelector(subject.labels, p.spec.podSelector),
  );
  if (selecting.length === 0) return true; // not isolated in this direction
  return selecting.some((p) =>
    ((direction === "Ingress" ? p.spec.ingress : p.spec.egress) ?? []).some((rule) => {
      const peers = direction === "Ingress" ? rule.from : rule.to;
      const peerOk =
        !peers || peers.length === 0 || peers.some((q) => peerMatches(q, p.metadata.namespace ?? "", peer));
      return peerOk && portMatches(rule.ports, dst, port, protocol);
    }),
  );
}

/** Whether `src` may open a connection to `dst` on `port`/`protocol` under `policies`. */
export function flowAllowed(
  policies: NetworkPolicyLike[],
  src: PodEndpoint,
  dst: PodEndpoint,
  port: number,
  protocol = "TCP",
): boolean {
  return (
    directionAllows(policies, "Egress", src, dst, dst, port, protocol) &&
    directionAllows(policies, "Ingress", dst, src, dst, port, protocol)
  );
}

// ---- strict field check from the models' .d.ts files ---------------------------------------------

type Shape =
  | { kind: "object"; props: Map<string, () => Shape> }
  | { kind: "array"; item: () => Shape }
  | { kind: "leaf" };

const LEAF: Shape = { kind: "leaf" };

interface DtsFile {
  file: string;
  /** Local interface / type alias declarations by name. */
  decls: Map<string, ts.InterfaceDeclaration | ts.TypeAliasDeclaration>;
  /** Exported alias → local name (`export { IObjectMeta as IIoK8s...ObjectMeta }`). */
  exportAliases: Map<string, string>;
  /** Imported name → module specifier. */
  imports: Map<string, string>;
}

const dtsCache = new Map<string, DtsFile>();
const shapeCache = new Map<string, Shape>();

function loadDts(file: string): DtsFile {
  const cached = dtsCache.get(file);
  if (cached) return cached;
  const sf = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, false);
  const dts: DtsFile = { file, decls: new Map(), exportAliases: new Map(), imports: new Map() };
  for (const st of sf.statements) {
    if (ts.isInterfaceDeclaration(st) || ts.isTypeAliasDeclaration(st)) dts.decls.set(st.name.text, st);
    else if (ts.isImportDeclaration(st) && ts.isStringLiteral(st.moduleSpecifier)) {
      const named = st.importClause?.namedBindings;
      if (named && ts.isNamedImports(named)) {
        for (const el of named.elements) dts.imports.set(el.name.text, st.moduleSpecifier.text);
      }
    } else if (ts.isExportDeclaration(st) && st.exportClause && ts.isNamedExports(st.exportClause)) {
      for (const el of st.exportClause.elements) {
        dts.exportAliases.set(el.name.text, (el.propertyName ?? el.name).text);
      }
    }
  }
  dtsCache.set(file, dts);
  return dts;
}

function resolveModule(fromFile: string, spec: string): string | undefined {
  if (spec.startsWith(".")) {
    const f = path.resolve(path.dirname(fromFile), `${spec}.d.ts`);
    return existsSync(f) ? f : undefined;
  }
  try {
    const js = createRequire(fromFile).resolve(spec);
    const f = js.replace(/\.(c|m)?js$/, ".d.ts");
    return existsSync(f) ? f : undefined;
  } catch {
    return undefined;
  }
}

function shapeOfNamed(dts: DtsFile, name: string): Shape {
  const key = `${dts.file}#${name}`;
  const cached = shapeCache.get(key);
  if (cached) return cached;
  let shape: Shape = LEAF;
  const local = dts.decls.get(name) ?? dts.decls.get(dts.exportAliases.get(name) ?? "");
  if (local && ts.isInterfaceDeclaration(local)) {
    shape = shapeOfMembers(dts, local.members);
  } else if (local && ts.isTypeAliasDeclaration(local)) {
    shape = shapeOfType(dts, local.type);
  } else if (dts.imports.has(name)) {
    const target = resolveModule(dts.file, dts.imports.get(name) as string);
    if (target) shape = shapeOfNamed(loadDts(target), name);
  }
  shapeCache.set(key, shape);
  return shape;
}

function shapeOfMembers(dts: DtsFile, members: ts.NodeArray<ts.TypeElement>): Shape {
  // An index signature means free-form keys (labels, resource maps, KEDA trigger metadata).
  if (members.some(ts.isIndexSignatureDeclaration)) return LEAF;
  const props = new Map<string, () => Shape>();
  for (const m of members) {
    if (!ts.isPropertySignature(m) || !m.name) continue;
    const name = ts.isStringLiteral(m.name) || ts.isIdentifier(m.name) ? m.name.text : undefined;
    if (name === undefined) continue;
    const typeNode = m.type;
    let memo: Shape | undefined;
    props.set(name, () => {
      memo ??= typeNode ? shapeOfType(dts, typeNode) : LEAF;
      return memo;
    });
  }
  return { kind: "object", props };
}

function shapeOfType(dts: DtsFile, node: ts.TypeNode): Shape {
  if (ts.isParenthesizedTypeNode(node)) return shapeOfType(dts, node.type);
  if (ts.isTypeLiteralNode(node)) return shapeOfMembers(dts, node.members);
  if (ts.isArrayTypeNode(node)) return { kind: "array", item: () => shapeOfType(dts, node.elementType) };
  if (ts.isUnionTypeNode(node)) {
    const rest = node.types.filter(
      (t) =>
        !(ts.isLiteralTypeNode(t) && t.literal.kind === ts.SyntaxKind.NullKeyword) &&
        t.kind !== ts.SyntaxKind.UndefinedKeyword,
    );
    return rest.length === 1 ? shapeOfType(dts, rest[0] as ts.TypeNode) : LEAF;
  }
  if (ts.isTypeReferenceNode(node) && ts.isIdentifier(node.typeName)) {
    const name = node.typeName.text;
    if (name === "Array" && node.typeArguments?.length === 1) {
      const arg = node.typeArguments[0] as ts.TypeNode;
      return { kind: "array", item: () => shapeOfType(dts, arg) };
    }
    return shapeOfNamed(dts, name);
  }
  return LEAF;
}

/**
 * The shape of a model's root interface, e.g. `rootShape(resolve("kubernetes-models/apps/v1/Deployment"), "IDeployment")`.
 * `modulePath` is a resolved .js/.mjs file of the model.
 */
export function rootShape(modulePath: string, interfaceName: string): Shape {
  const dtsFile = modulePath.replace(/\.(c|m)?js$/, ".d.ts");
  if (!existsSync(dtsFile)) throw new Error(`no type declarations at ${dtsFile}`);
  const shape = shapeOfNamed(loadDts(dtsFile), interfaceName);
  if (shape.kind !== "object") throw new Error(`${interfaceName} in ${dtsFile} is not an object type`);
  return shape;
}

/** Paths of fields in `value` that `shape` does not declare (empty when every field is known). */
export function unknownFields(value: unknown, shape: Shape, at = ""): string[] {
  if (shape.kind === "object" && typeof value === "object" && value !== null && !Array.isArray(value)) {
    const out: string[] = [];
    for (const [k, v] of Object.entries(value)) {
      const child = shape.props.get(k);
      if (!child) out.push(`${at}.${k}`);
      else out.push(...unknownFields(v, child(), `${at}.${k}`));
    }
    return out;
  }
  if (shape.kind === "array" && Array.isArray(value)) {
    const item = shape.item();
    return value.flatMap((v, i) => unknownFields(v, item, `${at}[${i}]`));
  }
  return [];
}
