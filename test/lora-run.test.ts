/**
 * A LoRA run end to end on the embedded cluster: the learner publishes adapter-only versions, the
 * Policy (in its thread) applies them over the reference it holds and serves the adapted model;
 * the final checkpoint exports as merged weights plus PEFT's adapter files, and `rlaif sample`
 * samples the adapted model.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EmbeddedCluster, startEmbeddedCluster } from "../services/cluster/embedded-cluster.js";
import { PolicyService } from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import { createClient } from "../services/core/src/grpc/client.js";
import { loadCheckpoint, modelFromCheckpoint } from "../services/core/src/model/checkpoint.js";
import { loraOf } from "../services/core/src/model/lora.js";
import { tunedModel } from "../services/core/src/model/lora-checkpoint.js";
import { loadModel } from "../services/core/src/model/model-source.js";
import { decodeSafetensors } from "../services/core/src/model/safetensors-bytes.js";
import { generate } from "../services/core/src/model/sampler.js";
import { tokenizerOf } from "../services/core/src/model/tokenizer.js";
import { PolicyModel } from "../services/policy/policy-model.js";
import { startRlaif } from "./helpers/spawn-rlaif.js";
import { tinyRunConfig, writeTinyCheckpoint } from "./helpers/tiny-model.js";

const LORA = { loraRank: 4, loraAlpha: 8, maxStaleness: 0, learningRate: 0.01 };

async function rlaif(args: string[]): Promise<string> {
  const r = await startRlaif(args).done;
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

describe("lora run", () => {
  let cluster: EmbeddedCluster;
  let checkpoint: string;
  let final = "";
  const lines: string[] = [];

  beforeAll(async () => {
    checkpoint = await writeTinyCheckpoint();
    cluster = await startEmbeddedCluster(tinyRunConfig(checkpoint, LORA), (l) => lines.push(l));
  });
  afterAll(async () => {
    await cluster?.close();
  });

  it("lora run - publishes adapter-only versions the Policy applies and serves: log-probs are the tuned model's", async () => {
    const config = tinyRunConfig(checkpoint, LORA);
    const policy = createClient(PolicyService, cluster.policyAddress, { defaultTimeoutMs: 10_000 });
    const before = Number((await policy.getInfo({})).weightsVersion);
    const run = await cluster.optimizer.runs.start(config.run);
    const summary = await run.done;
    expect(run.error).toBe("");
    if (!summary) return;
    final = summary.checkpointPath;
    // Bytes per version: the reference is the full model, every update's version its adapters.
    const published = lines
      .map((l) =>
        /published weights v(\d+) \(step (\d+), (adapters|full weights), (\d+) bytes(, a delta[^)]*)?\)/.exec(
          l,
        ),
      )
      .filter((m) => m !== null)
      .map((m) => ({ version: Number(m[1]), what: m[3], bytes: Number(m[4]), delta: m[5] !== undefined }));
    expect(published.map((p) => p.what)).toEqual(["full weights", "adapters", "adapters", "adapters"]);
    const [full, ...adapters] = published.map((p) => p.bytes) as [number, ...number[]];
    for (const b of adapters) expect(b).toBeLessThan(full / 5);
    process.stdout.write(
      `lora run: full version ${full} B, adapter versions ${adapters.join(", ")} B (deltas: ${published.map((p) => p.delta)})\n`,
    );
    // StepMetrics record the same bytes: the reference and step 1's version in step 1's metrics.
    const metrics = run.driver.history;
    expect(metrics.map((m) => Number(m.weightsBytesPublished))).toEqual([
      published[0] && published[1] ? published[0].bytes + published[1].bytes : -1,
      ...published.slice(2).map((p) => p.bytes),
    ]);
    expect(metrics.map((m) => m.weightsDelta)).toEqual(published.slice(1).map((p) => p.delta));
    // The Policy follows to the last adapter version without a failed swap.
    let info = await policy.getInfo({});
    for (let i = 0; i < 100 && info.weightsVersion !== summary.finalWeightsVersion; i++) {
      await new Promise((r) => setTimeout(r, 50));
      info = await policy.getInfo({});
    }
    expect(Number(info.weightsVersion)).toBe(before + 4);
    expect(Number(info.referenceVersion)).toBe(before + 1);
    expect(lines.filter((l) => l.includes("could not swap"))).toEqual([]);
    // What it serves is the learner's adapted model (as the final checkpoint holds it), not the base.
    const seq = { prompt: "The film was", completion: " good" };
    const served = (await policy.logprobs({ sequences: [seq], weights: 1 })).results[0]?.logprobs ?? [];
    const ref = (await policy.logprobs({ sequences: [seq], weights: 2 })).results[0]?.logprobs ?? [];
    const c = await loadCheckpoint(final);
    const tuned = new PolicyModel(tunedModel(c), c.kind);
    const enc = (s: string) => tuned.tokenizer.encode(s);
    const [ours] = await tuned.logprobs([enc(seq.prompt)], [enc(seq.completion)]);
    tuned.dispose();
    expect(served).toHaveLength(5);
    for (const [i, lp] of served.entries()) expect(lp).toBeCloseTo(ours?.[i] as number, 5);
    expect(Math.max(...served.map((lp, i) => Math.abs(lp - (ref[i] as number))))).toBeGreaterThan(1e-5);
    policy.close();
  }, 120_000);

  it("lora run - export merges the adapters and writes PEFT's files; rlaif sample samples the tuned model", async () => {
    expect(final).toMatch(/final\.safetensors$/);
    const c = await loadCheckpoint(final);
    const lora = [...c.state.keys()].filter((n) => n.startsWith("lora."));
    expect(lora.length).toBe(2 * 4);
    const out = mkdtempSync(path.join(tmpdir(), "rlaif-lora-export-"));
    await rlaif(["export", "--checkpoint", final, "--out", out]);
    // Merged: W + alpha/r · (B A)ᵀ on the Transformer's [in, out] layout, computed here from the
    // checkpoint's own tensors.
    const merged = decodeSafetensors(readFileSync(path.join(out, "model.safetensors")), "export").tensors;
    const name = "h.0.attn.c_attn";
    const w = c.weights.get(`${name}.weight`);
    const a = c.state.get(`lora.${name}.lora_A.weight`);
    const b = c.state.get(`lora.${name}.lora_B.weight`);
    if (!w || !a || !b) throw new Error("missing tensors");
    const [inDim, outDim] = w.shape as [number, number];
    const r = 4;
    let worst = 0;
    for (let i = 0; i < inDim; i++)
      for (let o = 0; o < outDim; o++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += (b.data[o * r + k] as number) * (a.data[k * inDim + i] as number);
        const want = (w.data[i * outDim + o] as number) + 2 * d;
        worst = Math.max(
          worst,
          Math.abs((merged.get(`${name}.weight`)?.data[i * outDim + o] as number) - want),
        );
      }
    expect(worst).toBeLessThan(1e-6);
    expect(merged.get(`${name}.weight`)?.data).not.toEqual(w.data);
    expect([...merged.keys()].sort()).toEqual([...c.weights.keys()].sort());
    // PEFT's adapter files next to it.
    const peft = JSON.parse(readFileSync(path.join(out, "adapter_config.json"), "utf8"));
    expect(peft).toMatchObject({ peft_type: "LORA", r: 4, lora_alpha: 8, fan_in_fan_out: true });
    const adapterKeys = Object.keys(
      Object.fromEntries(
        decodeSafetensors(readFileSync(path.join(out, "adapter_model.safetensors")), "peft").tensors,
      ),
    );
    expect(adapterKeys).toContain(`base_model.model.transformer.${name}.lora_A.weight`);
    expect(adapterKeys).toHaveLength(8);
    // `rlaif sample` loads the final checkpoint with its adapters: its greedy text is the tuned
    // model's (the checkpoint's bare parameters are the base).
    const model = await loadModel(final);
    expect(loraOf(model)).not.toBeNull();
    const prompts = path.join(out, "prompts.txt");
    writeFileSync(prompts, "The film was\n");
    const line = JSON.parse(
      await rlaif([
        "sample",
        "--checkpoint",
        final,
        "--prompts",
        prompts,
        "--temperature",
        "0",
        "--max-new-tokens",
        "8",
        "--json",
      ]),
    );
    const greedy = { maxNewTokens: 8, temperature: 0, topK: 0, topP: 1, seed: 1, stopAtEos: true };
    const row = [tokenizerOf(model).encode("The film was")];
    const sum = (lps: number[] | undefined) => (lps ?? []).reduce((s, x) => s + x, 0);
    const [want] = await generate(model, row, greedy);
    model.dispose();
    const base = modelFromCheckpoint(c);
    const [plain] = await generate(base, row, greedy);
    base.dispose();
    expect(line.completions[0].tokens).toBe(want?.tokens.length);
    expect(line.completions[0].logprob).toBeCloseTo(sum(want?.logprobs), 4);
    expect(Math.abs(line.completions[0].logprob - sum(plain?.logprobs))).toBeGreaterThan(1e-3);
  }, 120_000);
});
