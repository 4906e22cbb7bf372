/**
 * What the rendered k8s/ trees (base and both overlays, `kubectl kustomize`) refer to, checked
 * against what the same render contains:
 *
 * - every Secret and ConfigMap a pod reads (env, envFrom, volumes, projected volumes) is an object
 *   of the render, and every Secret key it reads is one the Secret template declares
 *   (`rlaif.io/secret-keys`); the templates themselves carry no data, so no key is committed;
 * - every containerPort is admitted by some NetworkPolicy ingress rule that selects its pod,
 *   except the ports listed here with the reason nothing may reach them;
 * - the nats-init Job's two steps parse with the real `rlaif nats-init` parser, reach the NATS
 *   Service, and each logs in as the user whose grant its part needs;
 * - the gpu-pool NATS cluster block is a configuration nats-server accepts (`nats-server -t`).
 *
 * test/k8s-manifests.test.ts holds the schemas and the platform lint; this file the wiring.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseCommand } from "../services/cli/args.js";
import { natsInitSpec } from "../services/cli/specs.js";
import { NATS_USER_ENV } from "../services/core/src/bus/nats-auth.js";
import { type LabelSelector, matchesSelector, type NetworkPolicyLike } from "./helpers/k8s-lint.js";
import { containersOf, type KObject, objectId, renderKustomize } from "./helpers/kustomize.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const K8S = fileURLToPath(new URL("../k8s", import.meta.url));
const TREES = { base: "base", "cpu-local": "overlays/cpu-local", "gpu-pool": "overlays/gpu-pool" } as const;
type TreeName = keyof typeof TREES;

const hasKustomize = requireTool(TOOLS.kubectlKustomize);
const hasNats = requireTool(TOOLS.natsServer);
const RENDERED = Object.fromEntries(
  Object.entries(TREES).map(([name, dir]) => [
    name,
    hasKustomize ? renderKustomize(path.join(K8S, dir)) : [],
  ]),
) as Record<TreeName, KObject[]>;

/** Ports no NetworkPolicy opens on purpose, by app label, with the reason. */
const CLOSED_PORTS: Record<string, Record<number, string>> = {
  // Collect/GetStatus are operator RPCs: reached through `kubectl port-forward`, which
  // NetworkPolicy does not filter (rollout.yaml); the kubelet's probes are not filtered either.
  rollout: { 50051: "operators only, via port-forward" },
};

type Obj = Record<string, unknown>;

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    volumes?: ({ name: string } & Obj)[];
  };
}

function template(o: KObject): PodTemplate | undefined {
  return (o.spec as { template?: PodTemplate } | undefined)?.template;
}

function podOwners(objs: readonly KObject[]): KObject[] {
  return objs.filter((o) => template(o) !== undefined);
}

/** A reference from a pod to a Secret or ConfigMap, with the keys it reads (none: the whole object). */
interface Ref {
  kind: "Secret" | "ConfigMap";
  name: string;
  keys: string[];
  where: string;
}

/** Every Secret/ConfigMap reference of a pod template: env, envFrom, volumes (projected too). */
function refsOf(o: KObject): Ref[] {
  const refs: Ref[] = [];
  const at = objectId(o);
  for (const c of containersOf(o) as {
    name: string;
    env?: {
      valueFrom?: {
        secretKeyRef?: { name: string; key: string };
        configMapKeyRef?: { name: string; key: string };
      };
    }[];
    envFrom?: { secretRef?: { name: string }; configMapRef?: { name: string } }[];
  }[]) {
    for (const e of c.env ?? []) {
      const s = e.valueFrom?.secretKeyRef;
      if (s) refs.push({ kind: "Secret", name: s.name, keys: [s.key], where: `${at}/${c.name} env` });
      const m = e.valueFrom?.configMapKeyRef;
      if (m) refs.push({ kind: "ConfigMap", name: m.name, keys: [m.key], where: `${at}/${c.name} env` });
    }
    for (const e of c.envFrom ?? []) {
      if (e.secretRef)
        refs.push({ kind: "Secret", name: e.secretRef.name, keys: [], where: `${at}/${c.name} envFrom` });
      if (e.configMapRef)
        refs.push({
          kind: "ConfigMap",
          name: e.configMapRef.name,
          keys: [],
          where: `${at}/${c.name} envFrom`,
        });
    }
  }
  type Source = {
    secret?: { secretName: string; items?: { key: string }[] };
    configMap?: { name: string; items?: { key: string }[] };
  };
  const fromSource = (v: Source, where: string) => {
    if (v.secret)
      refs.push({
        kind: "Secret",
        name: v.secret.secretName,
        keys: (v.secret.items ?? []).map((i) => i.key),
        where,
      });
    if (v.configMap)
      refs.push({
        kind: "ConfigMap",
        name: v.configMap.name,
        keys: (v.configMap.items ?? []).map((i) => i.key),
        where,
      });
  };
  for (const v of template(o)?.spec.volumes ?? []) {
    fromSource(v as Source, `${at} volume ${v.name}`);
    const projected = (v as { projected?: { sources?: Source[] } }).projected;
    for (const src of projected?.sources ?? []) fromSource(src, `${at} volume ${v.name}`);
  }
  return refs;
}

describe.skipIf(!hasKustomize)("k8s references", () => {
  it("secrets - every Secret and ConfigMap a pod reads is in the render, with the keys it reads", () => {
    for (const [name, objs] of Object.entries(RENDERED)) {
      const refs = podOwners(objs).flatMap(refsOf);
      expect(
        refs
          .filter((r) => r.kind === "Secret")
          .map((r) => r.name)
          .sort(),
        name,
      ).toContain("nats-users");
      for (const r of refs) {
        const obj = objs.find((o) => o.kind === r.kind && o.metadata.name === r.name);
        expect(
          obj,
          `${name}: ${r.where} reads ${r.kind}/${r.name}, which is not in the render`,
        ).toBeDefined();
        const declared =
          r.kind === "Secret"
            ? (
                (obj?.metadata.annotations as Record<string, string> | undefined)?.["rlaif.io/secret-keys"] ??
                ""
              )
                .split(",")
                .filter(Boolean)
            : Object.keys((obj as { data?: Record<string, string> } | undefined)?.data ?? {});
        for (const key of r.keys)
          expect(declared, `${name}: ${r.where} reads key ${key} of ${r.kind}/${r.name}`).toContain(key);
      }
    }
  });

  it("secrets - the Secret templates carry no data (no key committed) and every declared key is read by a pod", () => {
    for (const [name, objs] of Object.entries(RENDERED)) {
      const secrets = objs.filter((o) => o.kind === "Secret");
      expect(secrets.map((s) => s.metadata.name).sort(), name).toEqual(["nats-users", "rlaif-weights-keys"]);
      const read = new Set(
        podOwners(objs)
          .flatMap(refsOf)
          .filter((r) => r.kind === "Secret")
          .flatMap((r) => r.keys.map((k) => `${r.name}/${k}`)),
      );
      for (const s of secrets) {
        const raw = s as unknown as Obj;
        expect(raw.data, `${name} ${objectId(s)}`).toBeUndefined();
        expect(raw.stringData, `${name} ${objectId(s)}`).toBeUndefined();
        const keys = ((s.metadata.annotations as Record<string, string>)["rlaif.io/secret-keys"] ?? "").split(
          ",",
        );
        for (const k of keys)
          expect(read, `${name}: ${s.metadata.name}/${k} declared but read by nothing`).toContain(
            `${s.metadata.name}/${k}`,
          );
      }
    }
  });

  it("network - every containerPort is admitted by an ingress rule of a policy selecting its pod", () => {
    for (const [name, objs] of Object.entries(RENDERED)) {
      const pols = objs.filter((o) => o.kind === "NetworkPolicy") as unknown as NetworkPolicyLike[];
      const uncovered: string[] = [];
      for (const o of podOwners(objs)) {
        const labels = template(o)?.metadata.labels ?? {};
        const app = labels["app.kubernetes.io/name"] ?? "";
        const selecting = pols.filter(
          (p) =>
            (p.spec.policyTypes ?? ["Ingress"]).includes("Ingress") &&
            matchesSelector(labels, p.spec.podSelector as LabelSelector),
        );
        for (const c of containersOf(o) as {
          ports?: { name?: string; containerPort: number; protocol?: string }[];
        }[]) {
          for (const port of c.ports ?? []) {
            const proto = port.protocol ?? "TCP";
            const covered = selecting.some((p) =>
              (p.spec.ingress ?? []).some(
                (rule) =>
                  !rule.ports ||
                  rule.ports.some(
                    (rp) =>
                      (rp.protocol ?? "TCP") === proto &&
                      (rp.port === undefined || rp.port === port.containerPort || rp.port === port.name),
                  ),
              ),
            );
            const reason = CLOSED_PORTS[app]?.[port.containerPort];
            if (covered)
              expect(
                reason,
                `${name} ${app}:${port.containerPort} is open, drop its exception`,
              ).toBeUndefined();
            else if (!reason) uncovered.push(`${app}:${port.containerPort}/${proto}`);
          }
        }
      }
      expect(uncovered, name).toEqual([]);
    }
  });

  it("nats-init - the Job's steps parse with `rlaif nats-init`, dial the NATS Service, streams as optimizer then consumer as rollout", () => {
    for (const [name, objs] of Object.entries(RENDERED)) {
      const job = objs.find((o) => o.kind === "Job" && o.metadata.name === "nats-init") as KObject;
      const ps = (job.spec as { template: { spec: { initContainers?: Obj[]; containers: Obj[] } } }).template
        .spec;
      type C = {
        name: string;
        args?: string[];
        command?: string[];
        env?: { name: string; value?: string }[];
      };
      const steps = [...(ps.initContainers ?? []), ...ps.containers] as unknown as C[];
      const want = [
        ["streams", "optimizer"],
        ["consumer", "rollout"],
      ];
      expect(steps.length, name).toBe(want.length);
      steps.forEach((c, i) => {
        const where = `${name} nats-init/${c.name}`;
        expect(c.command, `${where}: the image's ENTRYPOINT runs bin/rlaif.js`).toBeUndefined();
        expect(c.args?.[0], where).toBe("nats-init");
        const parsed = parseCommand(natsInitSpec, (c.args ?? []).slice(1));
        expect(parsed.flags.part, where).toBe(want[i]?.[0]);
        expect(c.env?.find((e) => e.name === NATS_USER_ENV)?.value, where).toBe(want[i]?.[1]);
        const u = new URL(parsed.config.services.natsUrl);
        const svc = objs.find((o) => o.kind === "Service" && o.metadata.name === u.hostname);
        const ports = ((svc?.spec as { ports?: { port: number }[] } | undefined)?.ports ?? []).map(
          (p) => p.port,
        );
        expect(ports, `${where} --nats ${u.href}`).toContain(Number(u.port));
      });
    }
  });

  it.skipIf(!hasNats)("nats - the gpu-pool cluster block is a configuration nats-server accepts", () => {
    const cm = RENDERED["gpu-pool"].find((o) => o.kind === "ConfigMap" && o.metadata.name === "nats-config");
    const cluster = (cm as unknown as { data: Record<string, string> }).data["cluster.conf"] ?? "";
    const dir = mkdtempSync(path.join(tmpdir(), "rlaif-nats-cluster-"));
    try {
      writeFileSync(path.join(dir, "cluster.conf"), cluster);
      // The base's nats.conf needs nats-server >= 2.10 (sync_interval); the cluster block is checked
      // with the server settings it relies on (a server_name, JetStream on a store).
      writeFileSync(
        path.join(dir, "nats.conf"),
        `server_name: $POD_NAME\njetstream { store_dir: ${path.join(dir, "store")} }\ninclude ./cluster.conf\n`,
      );
      const r = spawnSync("nats-server", ["-c", path.join(dir, "nats.conf"), "-t"], {
        env: { ...process.env, POD_NAME: "nats-0" },
        encoding: "utf8",
      });
      expect(`${r.stdout}${r.stderr}`).toContain("is valid");
      expect(r.status).toBe(0);
      expect(cluster).toMatch(/^\s*cluster\s*\{/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
