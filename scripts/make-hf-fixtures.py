"""Writes the Hugging Face fixtures under test/fixtures/hf/ (dev-time only; CI reads the committed output).

Each fixture is a tiny random model saved by transformers' own `save_pretrained` (so names, shapes,
dtypes and config fields are exactly what users' directories hold), plus `reference.json` and
`reference.safetensors` with what transformers computes for a fixed token batch:

  logits      [B, T, V] of the model's forward (eager attention, fp32)
  logprobs    [B, T-1]  log p(x[t+1] | x[..t]): the log-probs of the batch as a completion
  loss        mean next-token cross-entropy over those B*(T-1) positions (= `labels=input_ids`)
  grad.<name> d loss / d parameter, under the parameter's name in the checkpoint

Fixtures: gpt2 (save_pretrained naming: `transformer.h.0...`, tied head, no mask buffers),
gpt2-hub (the same weights in the original hub naming `h.0...` with `attn.bias` mask buffers),
gpt2-fp16, llama (GQA, untied), llama-bf16-sharded (bf16 shards + model.safetensors.index.json),
llama-tied (4.x-style top-level `rope_theta`), qwen2 (q/k/v biases, one kv head, theta 1e6).
Every tensor is randomised before saving: transformers' init sets biases to 0 and norm gains to 1,
which would hide a bias or norm bug. Half-precision fixtures' references are the fp32 model whose
weights are the rounded half-precision values (that is what a loader computing in fp32 must give).

Needs transformers 5.x and torch (not part of CI). With the machine's local wheel store:
  python3 -m venv /tmp/hf-venv && /tmp/hf-venv/bin/pip install --no-index --find-links /opt/wheels \
    --find-links /opt/pypi/files --find-links /opt/pypi-more/files \
    "torch==2.13.0+cpu" "transformers==5.17.0" safetensors numpy
  /tmp/hf-venv/bin/python scripts/make-hf-fixtures.py
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "hf")
VOCAB = 61
TOKENS = [[0, 5, 17, 33, 2, 60, 41, 9, 12, 7], [1, 44, 3, 3, 58, 21, 30, 11, 6, 50]]


def randomise(model, seed):
    """Every parameter ~ N(0, 0.3²), norm gains ~ 1 + N(0, 0.1²), so no bias or gain is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_gain = ("ln" in name or "norm" in name) and name.endswith("weight")
            p.copy_(1 + 0.1 * noise if is_gain else 0.3 * noise)
    return model


def reference(model_dir, out_dir=None):
    """Loads `model_dir` in fp32 with eager attention and writes its reference outputs."""
    out_dir = out_dir or model_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.train(False)
    x = torch.tensor(TOKENS)
    out = model(input_ids=x, labels=x)
    logits = out.logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
    out.loss.backward()
    tensors = {"logits": logits.detach().contiguous(), "logprobs": lp.detach().contiguous()}
    for name, p in model.named_parameters():
        tensors[f"grad.{name}"] = p.grad.detach().float().contiguous()
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"tokens": TOKENS, "loss": out.loss.item()}, f, indent=1)
        f.write("\n")


def save(model, name, **kwargs):
    d = os.path.join(OUT, name)
    model.save_pretrained(d, **kwargs)
    return d


def gpt2_hub(src, name):
    """`src`'s weights as the original hub files name them: no `transformer.`, plus mask buffers."""
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    n = cfg["n_positions"]
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    for i in range(cfg["n_layer"]):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(src, "config.json"), d)
    return d


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    torch.manual_seed(0)

    gpt2 = randomise(GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)), 1)
    d = save(gpt2, "gpt2")
    reference(d)
    reference(gpt2_hub(d, "gpt2-hub"))
    reference(save(gpt2.half(), "gpt2-fp16"))

    llama_cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    llama = randomise(LlamaForCausalLM(llama_cfg), 2)
    reference(save(llama, "llama"))
    reference(save(llama.to(torch.bfloat16), "llama-bf16-sharded", max_shard_size="4KB"))

    tied = randomise(
        LlamaForCausalLM(
            LlamaConfig(
                vocab_size=VOCAB,
                hidden_size=24,
                intermediate_size=36,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=32,
                rms_norm_eps=1e-5,
                tie_word_embeddings=True,
            )
        ),
        3,
    )
    d = save(tied, "llama-tied")
    # the config as transformers 4.x writes it: top-level rope_theta, rope_scaling null, torch_dtype
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    cfg.pop("rope_parameters")
    cfg.update(rope_theta=500000.0, rope_scaling=None, torch_dtype=cfg.pop("dtype"))
    json.dump(cfg, open(path, "w"), indent=2)
    reference(d)

    qwen = randomise(
        Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=VOCAB,
                hidden_size=24,
                intermediate_size=40,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                max_position_embeddings=32,
                rope_theta=1000000.0,
                tie_word_embeddings=True,
            )
        ),
        4,
    )
    reference(save(qwen, "qwen2"))

    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
