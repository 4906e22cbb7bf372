import { afterEach, describe, expect, it, vi } from "vitest";
import { inCi, requireTool, TOOLS, type ToolSpec, whyMissing } from "./helpers/require-tool.js";

const present: ToolSpec = {
  name: "node",
  command: process.execPath,
  args: ["-e", "process.stdout.write('Kustomize Version: v4.5.7')"],
  install: "nothing",
};
const absent: ToolSpec = {
  name: "no-such-tool",
  command: "rlaif-no-such-tool-on-any-path",
  args: ["--version"],
  install: "apt-get install no-such-tool",
};
const failing: ToolSpec = {
  name: "python module",
  command: process.execPath,
  args: ["-e", "console.error('ModuleNotFoundError: nope'); process.exit(3)"],
  install: "apt-get install python3-nope",
};

afterEach(() => {
  vi.restoreAllMocks();
});

describe("require tool", () => {
  it("require tool - a tool that runs is available, with CI set or not", () => {
    expect(whyMissing(present)).toBeUndefined();
    expect(requireTool(present, { CI: "true" })).toBe(true);
    expect(requireTool(present, {})).toBe(true);
  });

  it("require tool - a missing tool fails in CI, naming the tool and its install command", () => {
    expect(() => requireTool(absent, { CI: "true" })).toThrow(
      /no-such-tool is missing: rlaif-no-such-tool-on-any-path cannot be run .*install it with: apt-get install no-such-tool \(CI is set/,
    );
    expect(() => requireTool(failing, { CI: "1" })).toThrow(/exited 3: ModuleNotFoundError: nope/);
  });

  it("require tool - locally a missing tool is a skip with one warning saying why", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    expect(requireTool(failing, { CI: "false" })).toBe(false);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]?.[0]).toMatch(
      /^SKIPPED: python module is missing: .* exited 3: ModuleNotFoundError: nope; install it with: apt-get install python3-nope$/,
    );
  });

  it("require tool - an installed tool that is too old counts as missing, with the reason", () => {
    const oldKubectl = { ...TOOLS.kubectlKustomize, command: present.command, args: present.args };
    expect(whyMissing(oldKubectl)).toMatch(/older than v5/);
    expect(() => requireTool(oldKubectl, { CI: "true" })).toThrow(/kubectl with kustomize v5 is missing/);
  });

  it("require tool - kubectl qualifies by the kustomize version it bundles", () => {
    const check = TOOLS.kubectlKustomize.inadequate;
    expect(check("Client Version: v1.32.3\nKustomize Version: v5.5.0\n")).toBeUndefined();
    expect(check('Client Version: version.Info{Major:"1", Minor:"20", GitVersion:"v1.20.2"}')).toMatch(
      /^kubectl v1\.20\.2 bundles a kustomize older than v5/,
    );
    expect(check("Client Version: v1.26.1\nKustomize Version: v4.5.7\n")).toMatch(/^kubectl v1\.26\.1 /);
  });

  it("require tool - CI counts as set unless unset, empty, 0 or false", () => {
    for (const v of ["true", "1", "yes", "TRUE"]) expect(inCi({ CI: v }), v).toBe(true);
    for (const v of ["", "0", "false", "False", " "]) expect(inCi({ CI: v }), JSON.stringify(v)).toBe(false);
    expect(inCi({})).toBe(false);
  });
});
