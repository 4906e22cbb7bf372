#!/usr/bin/python3
"""Independent PyTorch logits of a Hugging Face model directory (run by test/hf-export.test.ts).

Written from the architectures' equations (transformers' modeling_gpt2.py / modeling_llama.py /
modeling_qwen2.py), not from the TypeScript code; reads safetensors with json + numpy (F32, F16,
BF16), so Debian's python3-torch is enough:
  GPT-2: pre-LN blocks, LayerNorm eps, learned positions, Conv1D y = x W + b ([in, out]), q|k|v
         split of c_attn, scores q k^T / sqrt(D), causal softmax, tanh-GELU MLP, head tied to wte.
  Llama/Qwen2: RMSNorm w * x * rsqrt(mean(x^2) + eps), RoPE (non-interleaved halves, theta),
         grouped-query attention (query head j reads kv head j // (H / KV)), SwiGLU MLP
         down(silu(gate x) * up x), nn.Linear x W^T (+ Qwen2's q/k/v biases), head lm_head or tied.

Usage: hf_reference.py <model dir> <tokens JSON [[ids]]>; prints {"logits": [...]} (B*T*V floats).
Exit code 3 means torch (or numpy) cannot be imported.
"""
import json
import math
import os
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError:
    sys.exit(3)


def read_tensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        chunk = data[b:e]
        if t["dtype"] == "F32":
            a = np.frombuffer(chunk, dtype="<f4").astype(np.float32)
        elif t["dtype"] == "F16":
            a = np.frombuffer(chunk, dtype="<f2").astype(np.float32)
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit("unsupported dtype " + t["dtype"])
        out[name] = torch.tensor(a.reshape(t["shape"]), dtype=torch.float64)
    return out


def gpt2(c, w, x):
    w = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in w.items()}
    B, T = x.shape
    E, H = c["n_embd"], c["n_head"]
    D = E // H
    eps = c.get("layer_norm_epsilon", 1e-5)
    ln = lambda h, p: torch.nn.functional.layer_norm(h, (E,), w[p + ".weight"], w[p + ".bias"], eps)
    gelu = lambda v: 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    h = w["wte.weight"][x] + w["wpe.weight"][torch.arange(T)][None]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        a = ln(h, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in a.split(E, -1))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        s = s.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (s @ v).transpose(1, 2).reshape(B, T, E)
        h = h + o @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = gelu(ln(h, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        h = h + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    return ln(h, "ln_f") @ w["wte.weight"].T


def llama(c, w, x):
    B, T = x.shape
    E, H = c["hidden_size"], c["num_attention_heads"]
    KV = c.get("num_key_value_heads") or H
    D = c.get("head_dim") or E // H
    eps = c["rms_norm_eps"]
    theta = (c.get("rope_parameters") or {}).get("rope_theta") or c.get("rope_theta", 10000.0)
    norm = lambda h, p: w[p] * h * torch.rsqrt((h * h).mean(-1, keepdim=True) + eps)
    lin = lambda h, p: h @ w[p + ".weight"].T + (w[p + ".bias"] if p + ".bias" in w else 0)
    inv = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda t: torch.cat([-t[..., D // 2 :], t[..., : D // 2]], -1)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    h = w["model.embed_tokens.weight"][x]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = norm(h, p + "input_layernorm.weight")
        q = lin(a, p + "self_attn.q_proj").view(B, T, H, D).transpose(1, 2)
        k = lin(a, p + "self_attn.k_proj").view(B, T, KV, D).transpose(1, 2)
        v = lin(a, p + "self_attn.v_proj").view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        s = ((q @ k.transpose(-1, -2)) / math.sqrt(D)).masked_fill(~mask, float("-inf")).softmax(-1)
        h = h + lin((s @ v).transpose(1, 2).reshape(B, T, H * D), p + "self_attn.o_proj")
        m = norm(h, p + "post_attention_layernorm.weight")
        g = lin(m, p + "mlp.gate_proj")
        h = h + lin(torch.nn.functional.silu(g) * lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return norm(h, "model.norm.weight") @ head.T


def main():
    d = sys.argv[1]
    c = json.load(open(os.path.join(d, "config.json")))
    w = read_tensors(os.path.join(d, "model.safetensors"))
    x = torch.tensor(json.loads(sys.argv[2]))
    logits = gpt2(c, w, x) if c["model_type"] == "gpt2" else llama(c, w, x)
    print(json.dumps({"logits": logits.reshape(-1).tolist()}))


if __name__ == "__main__":  # importable for read_tensors (test/lora-export.test.ts)
    main()
