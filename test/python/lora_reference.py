"""LoRA reference in float64 PyTorch, written from the equations (PEFT's tuners/lora/layer.py):
each target layer's output gets (x A^T B^T) * alpha / r. Reads a JSON case (GPT weights, adapters,
tokens, a cotangent G) from argv[1], writes logits and d(sum(logits * G))/d(A, B) to argv[2]."""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from reference import gelu_tanh, layer_norm  # noqa: E402


def main():
    case = json.load(open(sys.argv[1]))
    cfg, scaling = case["config"], case["alpha"] / case["rank"]
    t = lambda v: torch.tensor(v["data"], dtype=torch.float64).reshape(v["shape"])  # noqa: E731
    P = {k: t(v) for k, v in case["weights"].items()}
    L = {k: t(v).requires_grad_(True) for k, v in case["adapters"].items()}
    tokens = torch.tensor(case["tokens"])
    B, T = tokens.shape
    C, H = cfg["dModel"], cfg["nHeads"]
    D = C // H

    def lin(i, name, x):
        # y = x W + b (+ (x A^T) B^T * scaling when adapted)
        y = x @ P[f"h.{i}.{name}.weight"] + P[f"h.{i}.{name}.bias"]
        a = L.get(f"h.{i}.{name}.lora_A.weight")
        if a is None:
            return y
        return y + (x @ a.T) @ L[f"h.{i}.{name}.lora_B.weight"].T * scaling

    x = P["wte"][tokens] + P["wpe"][torch.arange(T)].unsqueeze(0)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["nLayers"]):
        h = layer_norm(x, P[f"h.{i}.ln_1.weight"], P[f"h.{i}.ln_1.bias"])
        q, k, v = lin(i, "attn.c_attn", h).split(C, dim=-1)
        q, k, v = (z.reshape(B, T, H, D).transpose(1, 2) for z in (q, k, v))
        s = ((q @ k.transpose(-1, -2)) / np.sqrt(D)).masked_fill(~causal, float("-inf"))
        y = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + lin(i, "attn.c_proj", y)
        h = layer_norm(x, P[f"h.{i}.ln_2.weight"], P[f"h.{i}.ln_2.bias"])
        x = x + lin(i, "mlp.c_proj", gelu_tanh(lin(i, "mlp.c_fc", h)))
    logits = layer_norm(x, P["ln_f.weight"], P["ln_f.bias"]) @ P["lm_head.weight"]
    (logits * t(case["cotangent"])).sum().backward()
    out = {"logits": logits.detach().flatten().tolist()}
    out.update({f"grad.{k}": v.grad.flatten().tolist() for k, v in L.items()})
    json.dump(out, open(sys.argv[2], "w"))


main()
