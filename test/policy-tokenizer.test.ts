/**
 * The Policy's handlers with a model that brings its own sub-word tokenizer (GPT-2's real BPE on
 * a scripted model): prompts are encoded with it, GetInfo names it, each completion reports the
 * bytes its tokens wrote (what the Rollout maps per-byte rewards by), and GenerateStream sends a
 * character split across tokens once it is complete and never a stop sequence that ends inside
 * a token.
 */
import { create } from "@bufbuild/protobuf";
import { beforeAll, describe, expect, it } from "vitest";
import {
  GenerateRequestSchema,
  GenerateResponseSchema,
  GenerateStreamRequestSchema,
  GenerateStreamResponseSchema,
  GetInfoRequestSchema,
  GetInfoResponseSchema,
} from "../services/core/gen/rlaif/policy/v1/policy_pb.js";
import type { CallContext } from "../services/core/src/grpc/adapter.js";
import { initBackend } from "../services/core/src/model/backend.js";
import { hfTokenizer } from "../services/core/src/model/tokenizer-hf.js";
import type { ModelLoader } from "../services/policy/loaded-model.js";
import { PolicyModel } from "../services/policy/policy-model.js";
import { PolicyReplica } from "../services/policy/policy-replica.js";
import { policyService } from "../services/policy/policy-service.js";
import { alignTokenRewards } from "../services/rollout/collect.js";
import { gpt2TokenizerJson } from "./helpers/gpt2-tokenizer.js";
import { scripted } from "./helpers/scripted-model.js";

const gpt2 = hfTokenizer({ tokenizer: gpt2TokenizerJson(), generationConfig: { eos_token_id: 50256 } });
const SCRIPT = gpt2.encode(" Hi 😀 there. More");
const ctx = { signal: new AbortController().signal } as CallContext;
const unusedLoader = {} as ModelLoader;

describe("policy tokenizer", () => {
  let svc: ReturnType<typeof policyService>;
  beforeAll(async () => {
    await initBackend("wasm");
    const model = new PolicyModel(scripted([SCRIPT], 64, gpt2), "transformer");
    svc = policyService(new PolicyReplica(model, unusedLoader), { batchRows: 4, queueRows: 4 });
  });

  it("policy tokenizer - Generate encodes with the model's tokenizer and reports each token's bytes", async () => {
    const sampling = { maxNewTokens: 20, stop: [". M"] };
    const res = create(
      GenerateResponseSchema,
      await svc.generate(create(GenerateRequestSchema, { prompts: ["Say:"], sampling }), ctx),
    );
    const c = res.completions[0];
    if (!c) throw new Error("no completion");
    expect(c.promptTokens).toEqual(gpt2.encode("Say:")); // no BOS: GPT-2's tokenizer adds none
    expect(c.tokens).toEqual(SCRIPT);
    expect(c.text).toBe(" Hi 😀 there");
    expect(c.stop).toBe(". M");
    expect(Buffer.concat(c.tokenBytes).toString("utf8")).toBe(" Hi 😀 there. More");
    // the emoji's 4 bytes: "ĠðŁĺ" holds the space and 3 of them; per-byte rewards follow
    const rewards = [...Buffer.from(c.text)].map((_, k) => (k >= 4 && k < 8 ? 1 : 0)); // the emoji's bytes
    expect(alignTokenRewards(c.tokenBytes, c.text, rewards)).toEqual([0, 3, 1, 0, 0, 0]);
    const info = create(GetInfoResponseSchema, await svc.getInfo(create(GetInfoRequestSchema), ctx));
    expect(info.tokenizer).toMatch(/^hf byte-level BPE/);
  });

  it("policy tokenizer - GenerateStream sends a split character once complete and holds back the stop", async () => {
    const req = create(GenerateStreamRequestSchema, {
      prompt: "Say:",
      sampling: { maxNewTokens: 20, stop: [". M"] },
    });
    const pieces: string[] = [];
    for await (const m of svc.generateStream(req, ctx))
      pieces.push(create(GenerateStreamResponseSchema, m).text);
    expect(pieces).toEqual([" Hi", " ", "😀", " there", "", ""]);
  });
});
