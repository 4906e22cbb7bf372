/**
 * Offline validation of the deployment: the kustomize tree under k8s/ and the images
 * under deploy/. No cluster or Docker engine is needed, only the kubectl binary:
 *
 * - the base and both overlays are rendered by `kubectl kustomize` (kustomize v5, what
 *   `kubectl apply -k` applies; test/helpers/require-tool.ts: a failure in CI, a skip locally);
 * - every object is validated by its kubernetes-models / @kubernetes-models/keda model and checked
 *   for fields the API does not know (a typo would otherwise be dropped silently by the API server);
 * - custom lint rules hold the platform conventions: resources with commented numbers, GPU
 *   requests == limits, native gRPC probes on the `grpc` port, the restricted securityContext, a
 *   PodDisruptionBudget and a token-less ServiceAccount per workload, pinned images, `grpc` Service
 *   ports, NetworkPolicies that open exactly the flows of the design, container args that the real
 *   `rlaif serve` parser accepts and that point at existing Services, KEDA on the names the code
 *   uses;
 * - the Dockerfiles are multi-stage, non-root and run bin/rlaif.js.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import {
  ConfigMap,
  Namespace,
  PersistentVolumeClaim,
  Secret,
  Service,
  ServiceAccount,
} from "kubernetes-models/v1";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { parseCommand } from "../services/cli/args.js";
import { serveSpec } from "../services/cli/specs.js";
import {
  deployedAuthorizationConfig,
  NATS_PASSWORD_ENV,
  NATS_ROLES,
  NATS_USER_ENV,
  passwordEnvOf,
} from "../services/core/src/bus/nats-auth.js";
import { ROLLOUT_CONSUMER, subjectsFor } from "../services/core/src/bus/subjects.js";
import { DEFAULT_CHECKPOINT, REPO_ROOT } from "../services/core/src/config/settings.js";
import {
  flowAllowed,
  type LabelSelector,
  matchesSelector,
  type NetworkPolicyLike,
  type PodEndpoint,
  parseQuantity,
  rootShape,
  unknownFields,
} from "./helpers/k8s-lint.js";
import { containersOf, type KObject, objectId, parseImage, renderKustomize } from "./helpers/kustomize.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const K8S = path.join(ROOT, "k8s");
const require = createRequire(import.meta.url);

const OVERLAYS = ["cpu-local", "gpu-pool"] as const;
const TREE_NAMES = ["base", ...OVERLAYS] as const;
type TreeName = (typeof TREE_NAMES)[number];
const treeDir = (name: TreeName) =>
  name === "base" ? path.join(K8S, "base") : path.join(K8S, "overlays", name);

const hasKustomize = requireTool(TOOLS.kubectlKustomize);
/** Everything that gets rendered: the base and each overlay (empty where kubectl is missing: skipped). */
const TREES = Object.fromEntries(
  TREE_NAMES.map((name) => [name, hasKustomize ? renderKustomize(treeDir(name)) : []]),
) as Record<TreeName, KObject[]>;

const APP = "app.kubernetes.io/name";
const NAMESPACE = "rlaif";
const RLAIF_SERVICES = ["policy", "rollout", "feedback", "optimizer"] as const;
const WORKLOADS = [...RLAIF_SERVICES, "nats"] as const;
const GRPC_PORT = 50051;
const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
  version: string;
  dependencies: Record<string, string>;
};

/** The model class, and the module whose .d.ts declares its fields, of every kind the tree may use. */
const MODELS: Record<string, { model: new (data: never) => { validate(): void }; module: string }> = {
  "v1/Namespace": { model: Namespace, module: "kubernetes-models/v1/Namespace" },
  "v1/ServiceAccount": { model: ServiceAccount, module: "kubernetes-models/v1/ServiceAccount" },
  "v1/Service": { model: Service, module: "kubernetes-models/v1/Service" },
  "v1/ConfigMap": { model: ConfigMap, module: "kubernetes-models/v1/ConfigMap" },
  "v1/Secret": { model: Secret, module: "kubernetes-models/v1/Secret" },
  "batch/v1/Job": { model: Job, module: "kubernetes-models/batch/v1/Job" },
  "v1/PersistentVolumeClaim": {
    model: PersistentVolumeClaim,
    module: "kubernetes-models/v1/PersistentVolumeClaim",
  },
  "apps/v1/Deployment": { model: Deployment, module: "kubernetes-models/apps/v1/Deployment" },
  "apps/v1/StatefulSet": { model: StatefulSet, module: "kubernetes-models/apps/v1/StatefulSet" },
  "policy/v1/PodDisruptionBudget": {
    model: PodDisruptionBudget,
    module: "kubernetes-models/policy/v1/PodDisruptionBudget",
  },
  "networking.k8s.io/v1/NetworkPolicy": {
    model: NetworkPolicy,
    module: "kubernetes-models/networking.k8s.io/v1/NetworkPolicy",
  },
  "keda.sh/v1alpha1/ScaledObject": {
    model: ScaledObject,
    module: "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
  },
};

// ---- accessors -----------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number; protocol?: string }[];
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  securityContext?: Obj;
  startupProbe?: Obj;
  readinessProbe?: Obj;
  livenessProbe?: Obj;
  volumeMounts?: { name: string; mountPath: string }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
}

interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: Obj;
  nodeSelector?: Record<string, string>;
  tolerations?: { key?: string; operator?: string; value?: string; effect?: string }[];
  volumes?: ({ name: string } & Obj)[];
  containers: Container[];
}

function ofKind(objs: readonly KObject[], kind: string): KObject[] {
  return objs.filter((o) => o.kind === kind);
}

function byName(objs: readonly KObject[], kind: string, name: string): KObject {
  const hit = objs.find((o) => o.kind === kind && o.metadata.name === name);
  if (!hit) throw new Error(`no ${kind}/${name}`);
  return hit;
}

function workloads(objs: readonly KObject[]): KObject[] {
  return objs.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
}

/** Everything that runs pods: the workloads and the Jobs (nats-init), for the rules every pod obeys. */
function podOwners(objs: readonly KObject[]): KObject[] {
  return objs.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet" || o.kind === "Job");
}

function spec(o: KObject): Obj {
  return o.spec as Obj;
}

function podSpec(o: KObject): PodSpec {
  return (spec(o).template as { spec: PodSpec }).spec;
}

function podLabels(o: KObject): Record<string, string> {
  return (spec(o).template as { metadata: { labels: Record<string, string> } }).metadata.labels;
}

function mainContainer(o: KObject): Container {
  return podSpec(o).containers[0] as Container;
}

function appOf(o: KObject): string {
  return podLabels(o)[APP] as string;
}

function grpcPort(c: Container): number | undefined {
  return c.ports?.find((p) => p.name === "grpc")?.containerPort;
}

/** A flag's value in an argument list (`--flag value`). */
function flag(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

function rlaifWorkloads(objs: readonly KObject[]): KObject[] {
  return workloads(objs).filter((o) => (RLAIF_SERVICES as readonly string[]).includes(appOf(o)));
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? yamlFiles(path.join(dir, e.name))
      : e.name.endsWith(".yaml")
        ? [path.join(dir, e.name)]
        : [],
  );
}

// ---- rendering -----------------------------------------------------------------------------------

describe.skipIf(!hasKustomize)("k8s manifests", () => {
  it("kustomize - the base and both overlays render the same workloads into one namespace", () => {
    for (const name of TREE_NAMES) {
      const objs = TREES[name];
      expect(workloads(objs).map(appOf).sort(), name).toEqual([...WORKLOADS].sort());
      for (const o of objs) {
        if (o.kind === "Namespace") expect(o.metadata.name).toBe(NAMESPACE);
        else expect(o.metadata.namespace, `${name} ${objectId(o)}`).toBe(NAMESPACE);
      }
    }
    const scaled = (name: TreeName) => ofKind(TREES[name], "ScaledObject").map((o) => o.metadata.name);
    expect(scaled("base").sort()).toEqual(["feedback", "rollout"]);
    expect(scaled("gpu-pool").sort()).toEqual(["feedback", "rollout"]);
    expect(scaled("cpu-local")).toEqual([]);
    for (const name of TREE_NAMES)
      expect(
        ofKind(TREES[name], "Job").map((o) => o.metadata.name),
        name,
      ).toEqual(["nats-init"]);
  });

  it("kustomize - every images and replicas rule of an overlay takes effect (kustomize ignores a typo)", () => {
    for (const name of OVERLAYS) {
      const k = parseAllDocuments(
        readFileSync(path.join(treeDir(name), "kustomization.yaml"), "utf8"),
      )[0]?.toJS() as {
        images?: { name: string; newName?: string; newTag?: string }[];
        replicas?: { name: string; count: number }[];
      };
      const images = workloads(TREES[name]).flatMap((w) => containersOf(w).map((c) => c.image as string));
      for (const rule of k.images ?? []) {
        const want = `${rule.newName ?? rule.name}${rule.newTag ? `:${rule.newTag}` : ""}`;
        expect(images, `${name} images rule ${rule.name}`).toContain(want);
      }
      for (const rule of k.replicas ?? []) {
        const w = workloads(TREES[name]).find((o) => o.metadata.name === rule.name);
        expect(w, `${name} replicas rule ${rule.name}`).toBeDefined();
        expect(spec(w as KObject).replicas, `${name} ${rule.name}`).toBe(rule.count);
      }
      expect((k.images ?? []).length + (k.replicas ?? []).length, name).toBeGreaterThan(0);
    }
  });

  // ---- schemas -----------------------------------------------------------------------------------

  it("schema - every object passes its kubernetes-models validation", () => {
    for (const name of TREE_NAMES) {
      for (const o of TREES[name]) {
        const entry = MODELS[`${o.apiVersion}/${o.kind}`];
        expect(entry, `${name}: no model registered for ${o.apiVersion} ${o.kind}`).toBeDefined();
        const Model = (entry as (typeof MODELS)[string]).model;
        expect(
          () => new Model(structuredClone(o) as never).validate(),
          `${name} ${objectId(o)}`,
        ).not.toThrow();
      }
    }
  });

  const shapes = new Map<string, ReturnType<typeof rootShape>>();
  function shapeOf(o: KObject): ReturnType<typeof rootShape> {
    const key = `${o.apiVersion}/${o.kind}`;
    let s = shapes.get(key);
    if (!s) {
      s = rootShape(require.resolve((MODELS[key] as (typeof MODELS)[string]).module), `I${o.kind}`);
      shapes.set(key, s);
    }
    return s;
  }

  it("schema - no object has a field its API type does not declare", () => {
    for (const name of TREE_NAMES) {
      for (const o of TREES[name]) expect(unknownFields(o, shapeOf(o)), `${name} ${objectId(o)}`).toEqual([]);
    }
  });

  it("schema - the unknown-field check catches typos at any depth", () => {
    const d = structuredClone(byName(TREES["gpu-pool"], "Deployment", "optimizer")) as KObject;
    const c = podSpec(d).containers[0] as unknown as Obj;
    c.readinesProbe = c.readinessProbe;
    (c.securityContext as Obj).readOnlyRootFileSystem = true;
    const so = structuredClone(byName(TREES["gpu-pool"], "ScaledObject", "rollout")) as KObject;
    (spec(so).advanced as Obj).horizontalPodAutoscalerConfg = {};
    expect(unknownFields(d, shapeOf(d)).sort()).toEqual([
      ".spec.template.spec.containers[0].readinesProbe",
      ".spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem",
    ]);
    expect(unknownFields(so, shapeOf(so))).toEqual([".spec.advanced.horizontalPodAutoscalerConfg"]);
  });

  // ---- resources ---------------------------------------------------------------------------------

  it("resources - every container requests and limits cpu and memory, with requests <= limits", () => {
    for (const name of TREE_NAMES) {
      for (const w of podOwners(TREES[name])) {
        for (const c of containersOf(w) as unknown as Container[]) {
          const where = `${name} ${w.metadata.name}/${c.name}`;
          const { requests = {}, limits = {} } = c.resources ?? {};
          for (const r of ["cpu", "memory"]) {
            expect(requests[r], `${where} requests.${r}`).toBeDefined();
            expect(limits[r], `${where} limits.${r}`).toBeDefined();
            expect(parseQuantity(requests[r]), `${where} ${r}`).toBeLessThanOrEqual(parseQuantity(limits[r]));
            expect(parseQuantity(requests[r]), `${where} ${r}`).toBeGreaterThan(0);
          }
        }
      }
    }
  });

  it("gpu - GPU requests equal limits, and only the gpu-pool Optimizer gets one (Guaranteed QoS)", () => {
    for (const name of TREE_NAMES) {
      for (const w of podOwners(TREES[name])) {
        for (const c of containersOf(w) as unknown as Container[]) {
          const req = c.resources?.requests?.["nvidia.com/gpu"];
          const lim = c.resources?.limits?.["nvidia.com/gpu"];
          const where = `${name} ${w.metadata.name}/${c.name}`;
          expect(req === undefined ? undefined : parseQuantity(req), where).toBe(
            lim === undefined ? undefined : parseQuantity(lim),
          );
          const wantGpu = name === "gpu-pool" && w.metadata.name === "optimizer";
          expect(req === undefined ? 0 : parseQuantity(req), where).toBe(wantGpu ? 1 : 0);
          if (wantGpu) {
            // The pod holding the GPU is Guaranteed: every request equals its limit.
            for (const r of ["cpu", "memory", "nvidia.com/gpu"]) {
              expect(parseQuantity(c.resources?.requests?.[r]), `${where} ${r}`).toBe(
                parseQuantity(c.resources?.limits?.[r]),
              );
            }
          }
        }
      }
    }
  });

  // ---- probes and security -------------------------------------------------------------------------

  it("probes - rlaif containers have native gRPC startup, readiness and liveness probes on the grpc port", () => {
    for (const name of TREE_NAMES) {
      for (const w of rlaifWorkloads(TREES[name])) {
        const c = mainContainer(w);
        const port = grpcPort(c);
        expect(port, `${name} ${w.metadata.name}: container port named grpc`).toBe(GRPC_PORT);
        for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"] as const) {
          // Native gRPC probes take a port number (not a name): it must be the grpc port's number.
          expect(c[probe]?.grpc, `${name} ${w.metadata.name} ${probe}`).toEqual({ port, service: "" });
          for (const other of ["httpGet", "tcpSocket", "exec"]) expect(c[probe]?.[other]).toBeUndefined();
        }
      }
    }
  });

  it("security - pods and containers run with the restricted securityContext and a writable /tmp only", () => {
    for (const name of TREE_NAMES) {
      const ns = byName(TREES[name], "Namespace", NAMESPACE);
      expect(ns.metadata.labels).toMatchObject({ "pod-security.kubernetes.io/enforce": "restricted" });
      for (const w of podOwners(TREES[name])) {
        const ps = podSpec(w);
        const pod = ps.securityContext ?? {};
        for (const c of containersOf(w) as unknown as Container[]) {
          const sc = c.securityContext ?? {};
          const where = `${name} ${w.metadata.name}/${c.name}`;
          // Effective values: the container's setting, else the pod's.
          const eff = (k: string) => sc[k] ?? pod[k];
          expect(eff("runAsNonRoot"), `${where} runAsNonRoot`).toBe(true);
          expect(eff("runAsUser"), `${where} runAsUser`).toBeGreaterThan(0);
          expect(eff("seccompProfile"), `${where} seccompProfile`).toEqual({ type: "RuntimeDefault" });
          expect(sc.allowPrivilegeEscalation, `${where} allowPrivilegeEscalation`).toBe(false);
          expect(sc.readOnlyRootFilesystem, `${where} readOnlyRootFilesystem`).toBe(true);
          expect(sc.capabilities, `${where} capabilities`).toEqual({ drop: ["ALL"] });
          expect(sc.privileged, `${where} privileged`).not.toBe(true);
          if ([...RLAIF_SERVICES, "nats-init"].includes(appOf(w))) {
            const tmp = c.volumeMounts?.find((m) => m.mountPath === "/tmp");
            expect(tmp, `${where} /tmp mount`).toBeDefined();
            const vol = ps.volumes?.find((v) => v.name === tmp?.name) as {
              emptyDir?: { sizeLimit?: string };
            };
            expect(vol?.emptyDir?.sizeLimit, `${where} /tmp is a size-limited emptyDir`).toBeDefined();
          }
        }
      }
    }
  });

  it("workloads - each has a PodDisruptionBudget selecting exactly its pods", () => {
    for (const name of TREE_NAMES) {
      const pdbs = ofKind(TREES[name], "PodDisruptionBudget");
      const ws = workloads(TREES[name]);
      for (const w of ws) {
        const covering = pdbs.filter((p) => matchesSelector(podLabels(w), spec(p).selector as LabelSelector));
        expect(
          covering.map((p) => p.metadata.name),
          `${name} ${w.metadata.name}`,
        ).toEqual([w.metadata.name]);
        const others = ws.filter(
          (x) =>
            x !== w && matchesSelector(podLabels(x), spec(covering[0] as KObject).selector as LabelSelector),
        );
        expect(others, `${name} PDB ${w.metadata.name} selects only its workload`).toEqual([]);
      }
      // The single learner must not be evicted by a drain; everything else may lose one pod.
      expect(spec(byName(pdbs, "PodDisruptionBudget", "optimizer")).maxUnavailable).toBe(0);
      for (const p of pdbs) expect(spec(p).unhealthyPodEvictionPolicy, p.metadata.name).toBe("AlwaysAllow");
    }
  });

  it("workloads - each runs as its own ServiceAccount without an API token", () => {
    for (const name of TREE_NAMES) {
      for (const w of podOwners(TREES[name])) {
        const ps = podSpec(w);
        const where = `${name} ${w.metadata.name}`;
        expect(ps.serviceAccountName, where).toBe(w.metadata.name);
        expect(ps.automountServiceAccountToken, where).toBe(false);
        const sa = byName(TREES[name], "ServiceAccount", ps.serviceAccountName as string);
        expect(sa.automountServiceAccountToken, `${where} ServiceAccount`).toBe(false);
      }
    }
  });

  it("images - every image is pinned to a version, never :latest, and rlaif images carry the package version", () => {
    for (const name of TREE_NAMES) {
      for (const w of podOwners(TREES[name])) {
        for (const c of containersOf(w) as unknown as Container[]) {
          const img = parseImage(c.image);
          const where = `${name} ${w.metadata.name}/${c.name}: ${c.image}`;
          expect(img.tag ?? img.digest, where).toBeDefined();
          expect(img.tag, where).not.toBe("latest");
          if (img.name.endsWith("rlaif-cpu") || img.name.endsWith("rlaif-gpu")) {
            expect(img.tag, where).toBe(PACKAGE.version);
          }
        }
      }
    }
  });

  it("services - every rlaif Service is a ClusterIP with one port named grpc (h2c) onto its pods' grpc port", () => {
    for (const name of TREE_NAMES) {
      const objs = TREES[name];
      for (const app of RLAIF_SERVICES) {
        const svc = byName(objs, "Service", app);
        const s = spec(svc) as { type?: string; selector: Record<string, string>; ports: Obj[] };
        expect(s.type ?? "ClusterIP").toBe("ClusterIP");
        expect(s.ports, `${name} ${app}`).toEqual([
          {
            name: "grpc",
            port: GRPC_PORT,
            targetPort: "grpc",
            protocol: "TCP",
            appProtocol: "kubernetes.io/h2c",
          },
        ]);
        const selected = workloads(objs).filter((w) =>
          matchesSelector(podLabels(w), { matchLabels: s.selector }),
        );
        expect(selected.map(appOf), `${name} Service ${app} selects`).toEqual([app]);
      }
      for (const svc of ofKind(objs, "Service")) {
        for (const p of (spec(svc).ports as Obj[]) ?? [])
          expect(p.name, `${name} ${svc.metadata.name}`).toBeTruthy();
      }
    }
  });

  // ---- network -------------------------------------------------------------------------------------

  it("network - a default deny-all plus a NetworkPolicy of its own for every app label", () => {
    for (const name of TREE_NAMES) {
      const pols = ofKind(TREES[name], "NetworkPolicy") as unknown as NetworkPolicyLike[];
      const deny = pols.find((p) => p.metadata.name === "default-deny-all");
      expect(deny?.spec).toEqual({ podSelector: {}, policyTypes: ["Ingress", "Egress"] });
      for (const w of podOwners(TREES[name])) {
        const own = pols.filter(
          (p) =>
            p.spec.podSelector.matchLabels?.[APP] === appOf(w) &&
            matchesSelector(podLabels(w), p.spec.podSelector),
        );
        expect(own.length, `${name} ${appOf(w)}`).toBeGreaterThanOrEqual(1);
      }
    }
  });

  it("network - exactly the flows of the design are open", () => {
    for (const name of TREE_NAMES) {
      const objs = TREES[name];
      const nsObj = byName(objs, "Namespace", NAMESPACE);
      const nsLabels = {
        ...(nsObj.metadata.labels as Record<string, string>),
        "kubernetes.io/metadata.name": NAMESPACE,
      };
      const pols = ofKind(objs, "NetworkPolicy") as unknown as NetworkPolicyLike[];
      const inside: PodEndpoint[] = podOwners(objs).map((w) => ({
        name: appOf(w),
        namespace: NAMESPACE,
        namespaceLabels: nsLabels,
        labels: podLabels(w),
        ports: containersOf(w).flatMap((c) => (c as unknown as Container).ports ?? []),
      }));
      const ext = (n: string, ns: string, labels: Record<string, string>, ports: PodEndpoint["ports"]) => ({
        name: n,
        namespace: ns,
        namespaceLabels: { "kubernetes.io/metadata.name": ns, ...(ns === NAMESPACE ? nsLabels : {}) },
        labels,
        ports,
      });
      const web = [{ containerPort: 8080 }];
      const clustered = spec(byName(objs, "StatefulSet", "nats")).replicas !== 1;
      // A second NATS server: the routes of a cluster run between two pods of the same StatefulSet.
      const natsPod = inside.find((e) => e.name === "nats") as PodEndpoint;
      const peers = clustered ? [{ ...natsPod, name: "nats-peer" }] : [];
      const all: PodEndpoint[] = [
        ...inside,
        ...peers,
        ext("prometheus", "monitoring", { [APP]: "prometheus" }, web),
        ext("grafana-in-monitoring", "monitoring", { [APP]: "grafana" }, web),
        ext("prometheus-elsewhere", "other", { [APP]: "prometheus" }, web),
        ext("kube-dns", "kube-system", { "k8s-app": "kube-dns" }, [
          { containerPort: 53, protocol: "UDP" },
          { containerPort: 53, protocol: "TCP" },
        ]),
        ext("keda-operator", "keda", { app: "keda-operator", [APP]: "keda-operator" }, web),
        ext("client-elsewhere", "ml-pipelines", { "rlaif.io/optimizer-client": "true" }, web),
        ext("client-inside", NAMESPACE, { "rlaif.io/optimizer-client": "true" }, web),
        ext("stranger-elsewhere", "other", { app: "x" }, web),
        ext("stranger-inside", NAMESPACE, { [APP]: "debug" }, web),
      ];
      const open: string[] = [];
      for (const src of all) {
        for (const dst of all) {
          if (src === dst || (src.namespace !== NAMESPACE && dst.namespace !== NAMESPACE)) continue;
          for (const p of dst.ports) {
            const proto = p.protocol ?? "TCP";
            if (flowAllowed(pols, src, dst, p.containerPort, proto))
              open.push(`${src.name}->${dst.name}:${p.containerPort}/${proto}`);
          }
        }
      }
      const dns = (n: string) => [`${n}->kube-dns:53/UDP`, `${n}->kube-dns:53/TCP`];
      const routes = clustered
        ? [
            "nats->nats-peer:6222/TCP",
            "nats-peer->nats:6222/TCP",
            "nats-peer->kube-dns:53/UDP",
            "nats-peer->kube-dns:53/TCP",
            ...dns("nats"),
            // The peer is a NATS pod too: the KEDA rule admits it like the first one.
            "keda-operator->nats-peer:8222/TCP",
            ...["policy", "rollout", "optimizer", "nats-init"].map((c) => `${c}->nats-peer:4222/TCP`),
          ]
        : [];
      expect(open.sort(), name).toEqual(
        [
          "rollout->policy:50051/TCP",
          "rollout->feedback:50051/TCP",
          "policy->nats:4222/TCP",
          "rollout->nats:4222/TCP",
          "optimizer->nats:4222/TCP",
          "nats-init->nats:4222/TCP",
          "keda-operator->nats:8222/TCP",
          "client-elsewhere->optimizer:50051/TCP",
          "client-inside->optimizer:50051/TCP",
          ...RLAIF_SERVICES.map((svc) => `prometheus->${svc}:9464/TCP`),
          ...dns("policy"),
          ...dns("rollout"),
          ...dns("optimizer"),
          ...dns("nats-init"),
          ...dns("client-inside"),
          ...routes,
        ].sort(),
      );
    }
  });

  // ---- wiring to the code ------------------------------------------------------------------------------

  it("cli - every container's args parse with `rlaif serve` and point at existing Services and volumes", () => {
    const checkpointInImage = `/app/${path.relative(REPO_ROOT, DEFAULT_CHECKPOINT).split(path.sep).join("/")}`;
    for (const name of TREE_NAMES) {
      const objs = TREES[name];
      const servicePort = (host: string, port: number) => {
        const svc = objs.find((o) => o.kind === "Service" && o.metadata.name === host);
        return ((svc ? spec(svc).ports : []) as { port: number }[]).some((p) => p.port === port);
      };
      for (const w of rlaifWorkloads(objs)) {
        const c = mainContainer(w);
        const args = c.args ?? [];
        const where = `${name} ${w.metadata.name}`;
        expect(c.command, `${where}: the image's ENTRYPOINT runs bin/rlaif.js`).toBeUndefined();
        expect(args.slice(0, 2), where).toEqual(["serve", appOf(w)]);
        const parsed = parseCommand(serveSpec, args.slice(1));
        expect(parsed.positionals, where).toEqual([appOf(w)]);
        expect(Number(parsed.flags.port), `${where} --port`).toBe(grpcPort(c));
        // `rlaif serve` binds 127.0.0.1 by default: a pod must ask for every interface.
        expect(parsed.flags.host, `${where} --host`).toBe("0.0.0.0");
        const s = parsed.config.services;
        if (appOf(w) === "feedback") {
          expect(s.natsUrl, `${where}: Feedback uses no NATS`).toBe("");
        } else {
          const u = new URL(s.natsUrl);
          expect(u.protocol, where).toBe("nats:");
          expect(servicePort(u.hostname, Number(u.port)), `${where} --nats ${s.natsUrl}`).toBe(true);
        }
        if (appOf(w) === "rollout") {
          for (const addr of [s.policyAddress, s.feedbackAddress]) {
            const [host, port] = addr.split(":");
            expect(servicePort(host as string, Number(port)), `${where} ${addr}`).toBe(true);
          }
          expect(s.policyAddress.startsWith("policy:")).toBe(true);
          expect(s.feedbackAddress.startsWith("feedback:")).toBe(true);
        }
        if (appOf(w) === "policy" || appOf(w) === "optimizer") {
          expect(s.checkpoint, `${where}: the image's committed checkpoint`).toBe(checkpointInImage);
          // Signed weights: each pod mounts only its own half of the Secret's key pair.
          const key = appOf(w) === "policy" ? s.weightsVerifyKey : s.weightsSigningKey;
          const keyMount = c.volumeMounts?.find((m) => key.startsWith(`${m.mountPath}/`));
          const keyVol = podSpec(w).volumes?.find((v) => v.name === keyMount?.name) as {
            secret?: { secretName: string; items?: { key: string; path: string }[] };
          };
          expect(keyVol?.secret?.secretName, `${where} weights key`).toBe("rlaif-weights-keys");
          expect(keyVol?.secret?.items, `${where} weights key`).toEqual([
            { key: path.basename(key), path: path.basename(key) },
          ]);
        }
        if (appOf(w) === "optimizer") {
          const mount = c.volumeMounts?.find((m) => m.mountPath === parsed.config.out);
          const vol = podSpec(w).volumes?.find((v) => v.name === mount?.name) as {
            persistentVolumeClaim?: { claimName: string };
          };
          expect(vol?.persistentVolumeClaim?.claimName, `${where} --out on a PVC`).toBeDefined();
          byName(objs, "PersistentVolumeClaim", vol?.persistentVolumeClaim?.claimName as string);
        }
      }
    }
  });

  it("keda - Rollout and Feedback scale to zero on the lag of the code's `rollout` consumer of the jobs stream", () => {
    const group = ROLLOUT_CONSUMER;
    expect(group).toBe("rollout");
    for (const name of ["base", "gpu-pool"] as const) {
      const objs = TREES[name];
      for (const target of ["rollout", "feedback"] as const) {
        const where = `${name} ${target}`;
        const so = spec(byName(objs, "ScaledObject", target)) as {
          scaleTargetRef: { kind?: string; name: string };
          minReplicaCount: number;
          maxReplicaCount: number;
          cooldownPeriod: number;
          triggers: { type: string; metadata: Record<string, string> }[];
        };
        expect(so.scaleTargetRef.kind ?? "Deployment", where).toBe("Deployment");
        expect(so.scaleTargetRef.name, where).toBe(target);
        byName(objs, "Deployment", target);
        // Zero when nothing is queued: the nats-init Job creates the consumer, so KEDA can read
        // its lag while no worker runs.
        expect(so.minReplicaCount, where).toBe(0);
        expect(so.maxReplicaCount, where).toBeGreaterThan(0);
        expect(so.cooldownPeriod, where).toBeGreaterThanOrEqual(60);
        expect(so.triggers, where).toHaveLength(1);
        const t = so.triggers[0] as (typeof so.triggers)[number];
        expect(t.type).toBe("nats-jetstream");
        expect(t.metadata.stream).toBe(subjectsFor().queues.jobs.stream);
        expect(t.metadata.consumer).toBe(group);
        expect(t.metadata.activationLagThreshold, `${where}: the first queued job wakes it`).toBe("0");
        expect(Number(t.metadata.lagThreshold)).toBeGreaterThan(0);
        // The headless Service: on a cluster KEDA asks each server by name for the consumer's leader.
        const [host, port] = (t.metadata.natsServerMonitoringEndpoint as string).split(":");
        expect(host).toBe(`nats-headless.${NAMESPACE}.svc.cluster.local`);
        const natsSvc = spec(byName(objs, "Service", "nats-headless")).ports as {
          name: string;
          port: number;
        }[];
        expect(natsSvc.find((p) => p.name === "monitor")?.port).toBe(Number(port));
        // A fixed replica count would fight the autoscaler on every apply.
        expect(spec(byName(objs, "Deployment", target)).replicas, where).toBeUndefined();
      }
    }
    // The consumer KEDA reads is the one the init Job creates (as the Rollout's user).
    const job = byName(TREES.base, "Job", "nats-init");
    const consumer = podSpec(job).containers.find((c) => flag(c.args ?? [], "part") === "consumer");
    expect(consumer?.env?.find((e) => e.name === NATS_USER_ENV)?.value).toBe("rollout");
  });

  it("nats - nats-server >= 2.10.23 with JetStream fsync-per-ack on its own volume", () => {
    for (const name of TREE_NAMES) {
      const objs = TREES[name];
      const sts = byName(objs, "StatefulSet", "nats");
      const c = mainContainer(sts);
      const tag = parseImage(c.image).tag ?? "";
      const [maj, min, patch] = (/^(\d+)\.(\d+)\.(\d+)/.exec(tag) ?? []).slice(1).map(Number);
      const v = (maj ?? 0) * 1e6 + (min ?? 0) * 1e3 + (patch ?? 0);
      expect(v, `${name} ${c.image}`).toBeGreaterThanOrEqual(2_010_023);
      const conf = (byName(objs, "ConfigMap", "nats-config").data as Record<string, string>)[
        "nats.conf"
      ] as string;
      expect(conf).toMatch(/jetstream\s*\{[^}]*sync_interval:\s*always/);
      const storeDir = /store_dir:\s*(\S+)/.exec(conf)?.[1];
      const mount = c.volumeMounts?.find((m) => m.mountPath === storeDir);
      const claims = (spec(sts).volumeClaimTemplates as { metadata: { name: string } }[]).map(
        (t) => t.metadata.name,
      );
      expect(claims, `${name}: store_dir ${storeDir} on a claim`).toContain(mount?.name);
      expect(spec(sts).replicas).toBe(name === "gpu-pool" ? 3 : 1);
      // The init Job creates every stream with one replica per server.
      const init = containersOf(byName(objs, "Job", "nats-init")) as unknown as Container[];
      const streams = init.find((x) => flag(x.args ?? [], "part") === "streams");
      expect(flag(streams?.args ?? [], "replicas"), `${name} nats-init --replicas`).toBe(
        String(spec(sts).replicas),
      );
      expect(
        streams?.env?.find((e) => e.name === NATS_USER_ENV)?.value,
        `${name}: streams as optimizer`,
      ).toBe("optimizer");
    }
  });

  it("nats - gpu-pool runs a 3-server cluster: routes to every pod by its headless name, one server per node", () => {
    const objs = TREES["gpu-pool"];
    const sts = byName(objs, "StatefulSet", "nats");
    const n = spec(sts).replicas as number;
    const conf =
      (byName(objs, "ConfigMap", "nats-config").data as Record<string, string>)["cluster.conf"] ?? "";
    const port = Number(/port:\s*(\d+)/.exec(conf)?.[1]);
    const routes = [...conf.matchAll(/nats:\/\/([\w.-]+):(\d+)/g)].map((m) => `${m[1]}:${m[2]}`);
    const headless = spec(sts).serviceName as string;
    expect(routes).toEqual(Array.from({ length: n }, (_, i) => `nats-${i}.${headless}:${port}`));
    const c = mainContainer(sts);
    expect(c.ports?.find((p) => p.name === "cluster")?.containerPort).toBe(port);
    const svcPorts = spec(byName(objs, "Service", headless)).ports as { name: string; port: number }[];
    expect(svcPorts.find((p) => p.name === "cluster")?.port).toBe(port);
    expect(spec(byName(objs, "Service", headless)).publishNotReadyAddresses).toBe(true);
    const anti = (podSpec(sts) as unknown as { affinity?: { podAntiAffinity?: Obj } }).affinity
      ?.podAntiAffinity;
    const required = (anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []) as {
      topologyKey: string;
      labelSelector: LabelSelector;
    }[];
    expect(required.map((r) => r.topologyKey)).toEqual(["kubernetes.io/hostname"]);
    expect(matchesSelector(podLabels(sts), (required[0] as (typeof required)[number]).labelSelector)).toBe(
      true,
    );
    // A drain may take one server: the other two keep the JetStream quorum.
    const pdb = spec(byName(objs, "PodDisruptionBudget", "nats"));
    expect(pdb.maxUnavailable).toBeLessThan(Math.ceil((n + 1) / 2));
    // The base stays one server without a cluster block.
    const baseConf = (byName(TREES.base, "ConfigMap", "nats-config").data as Record<string, string>)[
      "cluster.conf"
    ];
    expect(baseConf?.split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"))).toEqual([]);
  });

  it("nats - clients log in, each service as its own user with the code's permissions, passwords from a Secret", () => {
    const secret = (key: string) => ({ name: "nats-users", key });
    for (const name of TREE_NAMES) {
      const objs = TREES[name];
      const data = byName(objs, "ConfigMap", "nats-config").data as Record<string, string>;
      expect(data["nats.conf"]).toMatch(/^include \.\/auth\.conf$/m);
      const auth = (data["auth.conf"] ?? "")
        .split("\n")
        .filter((line) => !line.trimStart().startsWith("#"))
        .join("\n");
      expect(auth.trim(), `${name}: auth.conf is deployedAuthorizationConfig()`).toBe(
        deployedAuthorizationConfig().trim(),
      );
      const natsEnv = mainContainer(byName(objs, "StatefulSet", "nats")).env ?? [];
      for (const role of NATS_ROLES) {
        const server = natsEnv.find((e) => e.name === passwordEnvOf(role));
        expect(server?.valueFrom?.secretKeyRef, `${name} nats ${passwordEnvOf(role)}`).toEqual(secret(role));
        const env = mainContainer(byName(objs, "Deployment", role)).env ?? [];
        expect(env.find((e) => e.name === NATS_USER_ENV)?.value, `${name} ${role}`).toBe(role);
        const password = env.find((e) => e.name === NATS_PASSWORD_ENV);
        expect(password?.valueFrom?.secretKeyRef, `${name} ${role}`).toEqual(secret(role));
      }
      const feedbackEnv = mainContainer(byName(objs, "Deployment", "feedback")).env ?? [];
      expect(
        feedbackEnv.some((e) => e.name === NATS_USER_ENV),
        `${name}: Feedback uses no NATS`,
      ).toBe(false);
    }
  });

  it("optimizer - one replica, Recreate strategy, never two learners", () => {
    for (const name of TREE_NAMES) {
      const d = byName(TREES[name], "Deployment", "optimizer");
      expect(spec(d).replicas, name).toBe(1);
      expect(spec(d).strategy, name).toEqual({ type: "Recreate" });
      expect(podSpec(d).securityContext?.fsGroup, `${name}: the run volume is writable`).toBe(
        podSpec(d).securityContext?.runAsGroup,
      );
    }
  });

  // ---- overlays ------------------------------------------------------------------------------------

  it("cpu-local - one replica each, the CPU image everywhere, wasm backends, no GPU scheduling", () => {
    const objs = TREES["cpu-local"];
    for (const w of workloads(objs)) expect(spec(w).replicas, w.metadata.name).toBe(1);
    for (const w of rlaifWorkloads(objs)) {
      const c = mainContainer(w);
      expect(parseImage(c.image).name, w.metadata.name).toBe("rlaif-cpu");
      expect(podSpec(w).nodeSelector, w.metadata.name).toBeUndefined();
      expect(podSpec(w).tolerations, w.metadata.name).toBeUndefined();
      if (appOf(w) === "policy" || appOf(w) === "optimizer")
        expect(flag(c.args ?? [], "backend")).toBe("wasm");
    }
  });

  it("gpu-pool - Optimizer on the GPU image with --backend tensorflow in the GPU pool; Policy scaled out", () => {
    const objs = TREES["gpu-pool"];
    const opt = byName(objs, "Deployment", "optimizer");
    const c = mainContainer(opt);
    expect(parseImage(c.image).name).toBe("rlaif-gpu");
    expect(flag(c.args ?? [], "backend")).toBe("tensorflow");
    const ps = podSpec(opt);
    expect(Object.keys(ps.nodeSelector ?? {}).length).toBeGreaterThan(0);
    expect(ps.tolerations).toContainEqual({
      key: "nvidia.com/gpu",
      operator: "Exists",
      effect: "NoSchedule",
    });
    for (const w of workloads(objs).filter((x) => x !== opt)) {
      expect(parseImage(mainContainer(w).image).name, w.metadata.name).not.toBe("rlaif-gpu");
      expect(podSpec(w).tolerations, `${w.metadata.name} stays off the GPU pool`).toBeUndefined();
    }
    expect(spec(byName(objs, "Deployment", "policy")).replicas).toBeGreaterThan(1);
    expect(flag(mainContainer(byName(objs, "Deployment", "policy")).args ?? [], "backend")).toBe("wasm");
  });
});

// ---- files (read as written, no rendering needed) -----------------------------------------------

describe("k8s files", () => {
  it("resources - every resource number in the YAML carries a comment explaining it", () => {
    const missing: string[] = [];
    for (const file of yamlFiles(K8S)) {
      const lines = readFileSync(file, "utf8").split("\n");
      lines.forEach((line, i) => {
        if (!/^\s*(cpu|memory|nvidia\.com\/gpu|storage|ephemeral-storage):\s*\S/.test(line)) return;
        const prev = (lines[i - 1] ?? "").trim();
        if (!line.includes("#") && !prev.startsWith("#"))
          missing.push(`${path.relative(ROOT, file)}:${i + 1}`);
      });
    }
    expect(missing).toEqual([]);
  });

  it("files - every manifest starts with a purpose comment; overlay kustomizations with a purpose line", () => {
    for (const file of yamlFiles(K8S)) {
      const first = readFileSync(file, "utf8").split("\n")[0] ?? "";
      expect(first, path.relative(ROOT, file)).toMatch(/^# \S.{20,}/);
    }
    for (const o of OVERLAYS) {
      const first = readFileSync(path.join(K8S, "overlays", o, "kustomization.yaml"), "utf8").split("\n")[0];
      expect(first).toMatch(new RegExp(`^# ${o}: \\S`));
    }
  });
});

// ---- Dockerfiles -----------------------------------------------------------------------------------

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function instructions(file: string): { op: string; rest: string }[] {
  const joined = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => !/^\s*#/.test(l))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const m = /^(\w+)\s+(.*)$/.exec(l);
      return { op: (m?.[1] ?? l).toUpperCase(), rest: m?.[2] ?? "" };
    });
}

describe("docker images", () => {
  const files = {
    cpu: path.join(ROOT, "deploy/Dockerfile.cpu"),
    gpu: path.join(ROOT, "deploy/Dockerfile.gpu"),
  };
  // As written in the base (the security test holds every rendered workload to it): no rendering needed.
  const policyDoc = parseAllDocuments(readFileSync(path.join(K8S, "base", "policy.yaml"), "utf8"))
    .map((d) => d.toJS() as KObject)
    .find((o) => o?.kind === "Deployment") as KObject;
  const runAsUser = (podSpec(policyDoc).securityContext as Obj).runAsUser;

  it("docker - both Dockerfiles are multi-stage, end as a numeric non-root USER and run bin/rlaif.js", () => {
    for (const [kind, file] of Object.entries(files)) {
      expect(existsSync(file), file).toBe(true);
      const ins = instructions(file);
      expect(ins.filter((i) => i.op === "FROM").length, kind).toBeGreaterThanOrEqual(2);
      const lastFrom = ins.map((i) => i.op).lastIndexOf("FROM");
      const users = ins.slice(lastFrom).filter((i) => i.op === "USER");
      const m = /^(\d+)(?::(\d+))?$/.exec(users.at(-1)?.rest ?? "");
      expect(m, `${kind}: final stage USER is numeric`).not.toBeNull();
      expect(Number(m?.[1]), kind).toBeGreaterThan(0);
      expect(Number(m?.[1]), `${kind}: USER matches runAsUser in k8s/`).toBe(runAsUser);
      // tini as PID 1 (installed in the final stage), which forwards SIGTERM to node and reaps zombies.
      const entry = ins.filter((i) => i.op === "ENTRYPOINT").at(-1)?.rest ?? "";
      expect(JSON.parse(entry), kind).toEqual(["/usr/bin/tini", "--", "node", "bin/rlaif.js"]);
      expect(
        ins.slice(lastFrom).some((i) => i.op === "RUN" && /apt-get install\b[^&]*\btini\b/.test(i.rest)),
        `${kind}: tini installed in the runtime stage`,
      ).toBe(true);
      expect(
        ins.some((i) => i.op === "RUN" && /npm ci\b.*--omit=dev/.test(i.rest)),
        `${kind}: npm ci --omit=dev`,
      ).toBe(true);
    }
  });

  it("docker - the CPU image is node:20.x.y-bookworm-slim; the GPU image is CUDA with tfjs-node-gpu at the project's tfjs version", () => {
    const cpu = readFileSync(files.cpu, "utf8");
    expect(cpu).toMatch(/^ARG NODE_IMAGE=node:20\.\d+\.\d+-bookworm-slim$/m);
    const gpu = readFileSync(files.gpu, "utf8");
    expect(gpu).toMatch(/^ARG CUDA_IMAGE=nvidia\/cuda:11\.\d+\.\d+-cudnn8-runtime-ubuntu\d+\.\d+$/m);
    expect(gpu).toMatch(/^FROM \$\{CUDA_IMAGE\} AS runtime$/m);
    const version = /^ARG TFJS_NODE_GPU_VERSION=(\S+)$/m.exec(gpu)?.[1];
    // tfjs-node-gpu must register its backend in the same tfjs the services import.
    expect(version).toBe(PACKAGE.dependencies["@tensorflow/tfjs"]);
    expect(gpu).toContain(`"@tensorflow/tfjs-node-gpu@\${TFJS_NODE_GPU_VERSION}"`);
  });

  it("docker - every base image is pinned to a full version or a digest, never latest", () => {
    for (const [kind, file] of Object.entries(files)) {
      const ins = instructions(file);
      const args = new Map(
        ins
          .filter((i) => i.op === "ARG" && i.rest.includes("="))
          .map((i) => i.rest.split("=", 2) as [string, string]),
      );
      const stages = new Set(
        ins.filter((i) => i.op === "FROM").map((i) => /\bAS\s+(\S+)/i.exec(i.rest)?.[1] ?? ""),
      );
      for (const from of ins.filter((i) => i.op === "FROM")) {
        const ref = (from.rest.split(/\s+/).find((w) => !w.startsWith("--")) ?? "").replace(
          /^\$\{?(\w+)\}?$/,
          (_, name: string) => args.get(name) ?? `unset ${name}`,
        );
        if (stages.has(ref)) continue;
        const img = parseImage(ref);
        const where = `${kind}: FROM ${from.rest} (${ref})`;
        expect(
          img.tag !== "latest" && (img.digest !== undefined || /\d+\.\d+\.\d+/.test(img.tag ?? "")),
          where,
        ).toBe(true);
      }
    }
  });

  it("docker - health is the gRPC probe: no Docker HEALTHCHECK, the README says so, the manifests probe grpc.health.v1", () => {
    const readme = readFileSync(path.join(ROOT, "deploy/README.md"), "utf8");
    for (const [kind, file] of Object.entries(files)) {
      const checks = instructions(file).filter((i) => i.op === "HEALTHCHECK");
      expect(
        checks.map((i) => i.rest),
        kind,
      ).toEqual(["NONE"]);
      expect(instructions(file).some((i) => i.op === "EXPOSE" && /\b50051\b/.test(i.rest))).toBe(true);
    }
    expect(readme).toMatch(/^## Health$/m);
    expect(readme).toContain("grpc.health.v1");
    // The probes themselves: "probes - rlaif containers have native gRPC ..." above.
  });

  it("docker - .dockerignore keeps local state out while every path the images COPY stays in the context", () => {
    const ignored = readFileSync(path.join(ROOT, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    for (const must of ["node_modules", ".git", "runs"]) expect(ignored, must).toContain(must);
    for (const file of Object.values(files)) {
      for (const i of instructions(file).filter((x) => x.op === "COPY" && !x.rest.startsWith("--from"))) {
        const parts = i.rest.split(/\s+/).filter((p) => !p.startsWith("--"));
        for (const src of parts.slice(0, -1)) {
          const top = src.replace(/\/$/, "").split("/")[0] as string;
          expect(ignored, `${path.basename(file)} copies ${src}`).not.toContain(top);
          // checkpoints/ holds the committed pretrained model, which may not exist in every checkout.
          if (top !== "checkpoints") expect(existsSync(path.join(ROOT, src)), src).toBe(true);
        }
      }
    }
  });
});
