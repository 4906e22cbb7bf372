/**
 * The Go example client (examples/go-client), built offline by its build.sh from Debian's Go
 * packages, against the services as `rlaif up` runs them: nats-server and one `rlaif serve`
 * process per service. It also lists the Policy's services with grpc-go's own reflection client.
 */
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalCluster, startLocalCluster } from "../services/cluster/local-cluster.js";
import {
  expectInterruptCancelledRun,
  expectRunAsServerReports,
  missingTools,
  parseClientRun,
  runProgram,
} from "./helpers/client-programs.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const DIR = join(import.meta.dirname, "..", "examples", "go-client");
/** Go sources build.sh compiles against: an existing GOPATH first, then Debian's. */
const GOPATHS = [...(process.env.GOPATH?.split(":") ?? []), "/usr/share/gocode"];
/** The directory Go's GOPATH mode would compile `pkg` from (the first GOPATH entry holding it). */
const goPackage = (pkg: string) => GOPATHS.map((p) => join(p, "src", pkg)).find((d) => existsSync(d));
const hasGoPackage = (pkg: string) => goPackage(pkg) !== undefined;
/** golang-github-golang-protobuf-1-5-dev, not 1-3: the 1.4+ API wraps google.golang.org/protobuf. */
const golangProtobuf = goPackage("github.com/golang/protobuf/proto");
const hasGolangProtobuf15 = golangProtobuf !== undefined && existsSync(join(golangProtobuf, "wrappers.go"));

const missing = [
  ...missingTools([
    { what: "golang-go", command: "go", args: ["version"] },
    { what: "protobuf-compiler", command: "protoc", args: ["--version"] },
    // Debian's older protoc-gen-go-1-3 has no --version and cannot generate proto3 optional.
    { what: "protoc-gen-go", command: process.env.PROTOC_GEN_GO ?? "protoc-gen-go", args: ["--version"] },
    { what: "protoc-gen-go-grpc", command: "protoc-gen-go-grpc", args: ["--version"] },
    { what: "nats-server", command: "nats-server", args: ["--version"] },
  ]),
  ...(hasGoPackage("google.golang.org/grpc") ? [] : ["golang-google-grpc-dev"]),
  ...(hasGoPackage("google.golang.org/protobuf/proto") ? [] : ["golang-google-protobuf-dev"]),
  ...(hasGolangProtobuf15 ? [] : ["golang-github-golang-protobuf-1-5-dev"]),
];
if (missing.length > 0 && process.env.CI)
  throw new Error(`the Go client test needs ${missing.join(", ")} installed in CI`);

describe.skipIf(missing.length > 0)("go client", () => {
  let cluster: LocalCluster;
  let binary: string;

  beforeAll(async () => {
    const out = mkdtempSync(join(tmpdir(), "rlaif-go-client-"));
    const build = await runProgram("bash", [join(DIR, "build.sh"), out], { timeoutMs: 170_000 });
    expect(build.stderr).toBe("");
    expect(build.code).toBe(0);
    binary = join(out, "go-client");
    cluster = await startLocalCluster(tinyRunConfig(await writeTinyCheckpoint()), () => {});
  }, 240_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);

  it("go client - reflection, GetInfo, Generate and a 3-step run print the reward curve and SUCCEEDED", async () => {
    const { policy, optimizer } = cluster.addresses;
    const out = await runProgram(binary, [
      ...["-policy", policy, "-optimizer", optimizer, "-max-new-tokens", "6"],
      ...["-prompt", "The film was", "-prompt", "I think that"],
    ]);
    expect(out.stderr).toBe("");
    expect(out.code).toBe(0);
    const lines = out.stdout.split("\n");
    expect(lines[0]).toBe(
      `services of ${policy} (reflection v1alpha): grpc.health.v1.Health, rlaif.policy.v1.PolicyService`,
    );
    expect(lines[1]).toMatch(
      new RegExp(`^policy ${policy}: transformer, \\d+ parameters, vocab 258, context 48`),
    );
    expect(out.stdout).toMatch(/^generate: 2 samples of "The film was" with weights version \d+$/m);
    const run = parseClientRun(out.stdout);
    expect(run.curve.map((r) => r.step)).toEqual([1, 2, 3]);
    expect(run.trajectories).toBe(12);
    await expectRunAsServerReports(run, optimizer);
  }, 120_000);

  it("go client - Ctrl-C while the run trains cancels it through CancelRun and exits 130", async () => {
    const { policy, optimizer } = cluster.addresses;
    const out = await runProgram(
      binary,
      ["-policy", policy, "-optimizer", optimizer, "-steps", "1000", "-max-new-tokens", "4"],
      { interruptWhen: /^ {3}1 {2}/m },
    );
    await expectInterruptCancelledRun(out, optimizer);
  }, 120_000);

  it("go client - an unreachable address exits 1 naming it, bad flags exit 2 naming the flag", async () => {
    const { policy } = cluster.addresses;
    const dead = await runProgram(binary, [
      "-policy",
      "127.0.0.1:1",
      "-optimizer",
      policy,
      "-connect-timeout",
      "1s",
    ]);
    expect(dead.code).toBe(1);
    expect(dead.stderr).toMatch(/^go-client: cannot reach the Policy service at 127\.0\.0\.1:1: /);
    const steps = await runProgram(binary, ["-policy", policy, "-optimizer", policy, "-steps", "0"]);
    expect(steps.code).toBe(2);
    expect(steps.stderr).toBe("go-client: -steps must be at least 1\n");
    const seed = await runProgram(binary, ["-policy", policy, "-optimizer", policy, "-seed", "4294967296"]);
    expect(seed.code).toBe(2);
    expect(seed.stderr).toBe("go-client: -seed must be in 0..4294967295, got 4294967296\n");
  });
});
