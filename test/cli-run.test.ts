/**
 * `rlaif run`, `rlaif status` and `rlaif cancel` against a cluster of `rlaif serve` processes
 * and nats-server, as a user who started the cluster by hand would drive it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { explicitRunConfig } from "../services/cli/remote-run.js";
import { type LocalCluster, startLocalCluster } from "../services/cluster/local-cluster.js";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";
import { type RlaifResult, startRlaif } from "./helpers/spawn-rlaif.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const TINY = ["--prompts-per-step", "2", "--samples-per-prompt", "2", "--max-new-tokens", "6"];

type Result = RlaifResult;
const start = startRlaif;
const rlaif = (...args: string[]) => start(args).done;
const lastJson = (r: Result) => JSON.parse(r.stdout.trim().split("\n").at(-1) as string);

describe("cli run, status, cancel (unit)", () => {
  it("cli run - only the run settings the user set are sent; the Optimizer's defaults fill the rest", () => {
    const config = loadConfig(undefined, { steps: "3", lr: "0.01", "top-p": "0.9", baseline: "group" });
    const sent = explicitRunConfig(config) as Record<string, unknown>;
    expect(Object.keys(sent).sort()).toEqual(["baseline", "learningRate", "sampling", "steps"]);
    expect(sent.steps).toBe(3);
    expect(sent.learningRate).toBe(0.01);
    expect(sent.sampling).toEqual({ topP: 0.9 });
    expect(typeof sent.baseline).toBe("number");
  });
});

const hasNats = requireTool(TOOLS.natsServer);

describe.skipIf(!hasNats)("cli run, status, cancel (cluster)", () => {
  let cluster: LocalCluster;
  let optimizer: string;
  let out: string;
  let firstRun = "";

  beforeAll(async () => {
    const config = tinyRunConfig(await writeTinyCheckpoint());
    out = config.out;
    cluster = await startLocalCluster(config, () => {});
    optimizer = cluster.addresses.optimizer;
  }, 180_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);

  it("cli run - starts a run on the cluster and reports it as train does", async () => {
    const r = await rlaif("run", "--optimizer", optimizer, "--steps", "3", ...TINY, "--json");
    expect(r.code, r.stderr).toBe(0);
    const summary = lastJson(r);
    expect(summary.steps).toBe(3);
    expect(summary.mode).toBe("distributed");
    expect(summary.trajectories).toBe(12);
    expect(typeof summary.finalWeightsVersion).toBe("number");
    expect(r.stderr.match(/^step \d\/3 reward/gm)).toHaveLength(3);
    expect(r.stderr).toContain(`started ${summary.runId}, 3 steps on ${optimizer}`);
    firstRun = summary.runId;
    // The Optimizer process wrote the run's files, provenance included.
    const config = JSON.parse(readFileSync(join(out, firstRun, "config.json"), "utf8"));
    expect(config.provenance.bus).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    expect(config.provenance.mode).toBe("distributed");
    expect(config.provenance.feedback.address).toBe(cluster.addresses.feedback);
    expect(config.provenance.feedback.scorers).toEqual([
      { id: "rule-afinn165", version: expect.any(String) },
    ]);
  }, 120_000);

  it("cli status - lists the runs, and shows one run's state, metrics and summary", async () => {
    const list = await rlaif("status", "--optimizer", optimizer);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${firstRun}\\s+SUCCEEDED\\s+step 3/3\\s+started \\d{4}-`, "m"));
    const one = await rlaif("status", "--optimizer", optimizer, firstRun);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(
      new RegExp(`^run ${firstRun}: SUCCEEDED, step 3 of 3\\nlast step 3/3 reward `),
    );
    expect(one.stdout).toMatch(/\(distributed\): 3 steps, 12 trajectories/);
    const json = lastJson(await rlaif("status", "--optimizer", optimizer, firstRun, "--json"));
    expect(json).toMatchObject({ runId: firstRun, state: "RUN_STATE_SUCCEEDED", step: 3, error: "" });
    expect(json.lastMetrics.step).toBe(3);
    expect(json.summary.steps).toBe(3);
    const all = lastJson(await rlaif("status", "--optimizer", optimizer, "--json"));
    expect(all.runs.map((r: { runId: string }) => r.runId)).toContain(firstRun);
  }, 60_000);

  it("cli cancel - stops a running run, which its watcher reports; run --resume continues it", async () => {
    const long = start([
      "run",
      "--optimizer",
      optimizer,
      "--steps",
      "500",
      ...TINY,
      "--checkpoint-every",
      "1",
    ]);
    // Wait (bounded by the test's timeout) until the run has taken two steps.
    let exited = false;
    void long.done.then(() => {
      exited = true;
    });
    while (!exited && !/^step 2\/500 /m.test(long.stderr())) await new Promise((r) => setTimeout(r, 50));
    expect(exited, long.stderr()).toBe(false);
    const cancel = await rlaif("cancel", "--optimizer", optimizer);
    expect(cancel.code, cancel.stderr).toBe(0);
    const m =
      /^run (\S+): CANCELLED at step (\d+); continue it with rlaif run --optimizer \S+ --resume \1\n$/.exec(
        cancel.stdout,
      );
    expect(m, cancel.stdout).not.toBeNull();
    const [runId, step] = [m?.[1] as string, Number(m?.[2])];
    const watched = await long.done;
    expect(watched.code).toBe(1);
    expect(watched.stderr).toMatch(new RegExp(`run ${runId} ended CANCELLED at step ${step}`));
    const again = await rlaif("cancel", "--optimizer", optimizer, runId);
    expect(again.stdout).toBe(
      `run ${runId}: CANCELLED at step ${step}; continue it with rlaif run --optimizer ${optimizer} --resume ${runId}\n`,
    );
    expect((await rlaif("status", "--optimizer", optimizer, runId)).stdout).toMatch(
      new RegExp(`^run ${runId}: CANCELLED, step ${step} of 500`),
    );
    const resumed = await rlaif(
      "run",
      "--optimizer",
      optimizer,
      "--resume",
      runId,
      "--steps",
      String(step + 2),
      "--json",
    );
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain(`resumed ${runId} at step ${step} of ${step + 2} steps`);
    expect(resumed.stderr.match(/^step \d+\/\d+ reward/gm)).toHaveLength(2);
    expect(lastJson(resumed)).toMatchObject({ runId, steps: step + 2 });
  }, 120_000);

  it("cli run - an Optimizer that does not answer, a refused change or an unknown run exits 2 saying what to fix", async () => {
    const cases: [string[], RegExp][] = [
      [["run", "--steps", "1"], /--optimizer <host:port> is required/],
      [["run", "--optimizer", "nohost"], /--optimizer: must look like host:port, got "nohost"/],
      [
        ["run", "--optimizer", "127.0.0.1:1"],
        /--optimizer 127\.0\.0\.1:1: no OptimizerService answers there \(UNAVAILABLE: /,
      ],
      [
        ["run", "--optimizer", cluster.addresses.policy],
        /no OptimizerService answers there \(a gRPC server answers but does not serve rlaif\.optimizer\.v1\.OptimizerService\)/,
      ],
      [
        ["run", "--optimizer", optimizer, "--resume", firstRun, "--lr", "0.5"],
        /--lr: the run was started with 0\.00025, got 0\.5/,
      ],
      [["status", "--optimizer", optimizer, "no-such-run"], /no run with id "no-such-run"/],
      [["cancel"], /--optimizer <host:port> is required/],
      [["status", "--optimizer", optimizer, "a", "b"], /expected 0\.\.1 argument\(s\), got 2/],
    ];
    for (const [args, message] of cases) {
      const r = await rlaif(...args);
      expect(r.code, `${args.join(" ")}\n${r.stderr}`).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(message);
    }
  }, 120_000);
});
