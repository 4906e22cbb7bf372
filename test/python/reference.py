#!/usr/bin/python3
"""Independent PyTorch reference for the learner's numerics (run by test/torch-crosscheck.test.ts).

Written from the equations, not from the TypeScript code:

  REINFORCE with returns-to-go and a baseline (per trajectory, completion tokens k = 0..C-1):
      r_k     = per-token rewards (a scalar reward is paid on the last token)
      R_k     = sum_{j>=k} gamma^(j-k) r_j,      A_k = R_k - b
      L       = -(1/N) sum m*log pi(a|s)*A + beta*(1/N) sum m*KL - c_ent*(1/N) sum m*H
      k1      = log pi(a) - log pi_ref(a),       k3 = (r - 1) - log r,  r = pi_ref(a)/pi(a)
      H       = -sum_j pi(j|s) log pi(j|s)
  GPT (pre-LN, learned positions, tanh-GELU, causal attention, untied head, matrices [in, out]).
  Global-norm clipping g <- g*min(1, c/||g||), then one torch.optim.AdamW step.

Usage: reference.py <case dir>. Reads <dir>/case.json (+ <dir>/weights.safetensors for model cases),
writes <dir>/result.json (index) and <dir>/result.bin (float64 little-endian arrays).
Exit code 3 means torch (or numpy) cannot be imported.
"""

import json
import os
import struct
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import numpy as np
    import torch
except ImportError as e:  # the TS test turns this into a skip (or a failure under CI)
    print(f"reference.py: cannot import torch/numpy: {e}", file=sys.stderr)
    sys.exit(3)

torch.set_num_threads(1)
# float64 by default (the reference); REFERENCE_DTYPE=float32 shows what float32 itself can reach
DT = torch.float32 if os.environ.get("REFERENCE_DTYPE") == "float32" else torch.float64


# ---------------------------------------------------------------- safetensors (plain reader)
def read_safetensors(path):
    """Header: u64 LE length n, n bytes of JSON {name: {dtype, shape, data_offsets}}, then data."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {meta['dtype']} not supported")
        a, b = meta["data_offsets"]
        arr = np.frombuffer(raw[base + a : base + b], dtype="<f4").reshape(meta["shape"])
        out[name] = torch.tensor(arr.astype(np.float64)).to(DT)
    return out


# ---------------------------------------------------------------- batch layout and advantages
def returns_to_go(rewards, gamma):
    # R_k = sum_{j>=k} gamma^(j-k) r_j  (written as the sum, not as a recursion)
    n = len(rewards)
    return [sum(gamma ** (j - k) * rewards[j] for j in range(k, n)) for k in range(n)]


def build_batch(case):
    """Row = [BOS, prompt, completion] right-padded; input = row[:-1], action = row[1:];
    completion token k of trajectory i is the action at input position |prompt_i| + k."""
    o = case["options"]
    trajs = case["trajectories"]
    rows = [[o["bosId"]] + t["promptTokens"] + t["completionTokens"] for t in trajs]
    T = max(len(r) for r in rows) - 1
    B = len(rows)
    tokens = np.full((B, T), o["padId"], dtype=np.int64)
    actions = np.full((B, T), o["padId"], dtype=np.int64)
    mask = np.zeros((B, T))
    adv = np.zeros((B, T))
    ref = np.zeros((B, T))
    for i, (row, t) in enumerate(zip(rows, trajs)):
        tokens[i, : len(row) - 1] = row[:-1]
        actions[i, : len(row) - 1] = row[1:]
        c = len(t["completionTokens"])
        if t.get("tokenRewards"):
            r = list(t["tokenRewards"])
        else:
            r = [0.0] * c
            r[-1] = t["reward"]
        R = returns_to_go(r, o["gamma"])
        s = len(t["promptTokens"])
        for k in range(c):
            mask[i, s + k] = 1.0
            adv[i, s + k] = R[k] - o["baseline"]
            ref[i, s + k] = t["refLogprobs"][k]
    return {
        "tokens": torch.tensor(tokens),
        "actions": torch.tensor(actions),
        "mask": torch.tensor(mask, dtype=DT),
        "advantages": torch.tensor(adv, dtype=DT),
        "refLogprobs": torch.tensor(ref, dtype=DT),
    }


# ---------------------------------------------------------------- the loss
def pg_loss(logits, batch, loss_cfg):
    z = logits.to(DT)
    logp = torch.log_softmax(z, dim=-1)  # log pi(j|s)
    lp_a = torch.gather(logp, -1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # log pi(a|s)
    m = batch["mask"]
    n = torch.clamp(m.sum(), min=1.0)
    pg = -(m * lp_a * batch["advantages"]).sum() / n
    log_r = batch["refLogprobs"] - lp_a  # log(pi_ref/pi)
    if loss_cfg["klEstimator"] == "k1":
        kl_t = lp_a - batch["refLogprobs"]
    else:
        kl_t = (torch.exp(log_r) - 1.0) - log_r
    kl = (m * kl_t).sum() / n
    ent_t = -(torch.exp(logp) * logp).sum(-1)
    ent = (m * ent_t).sum() / n
    loss = pg + loss_cfg["klCoef"] * kl - loss_cfg["entropyCoef"] * ent
    return {"loss": loss, "pgLoss": pg, "kl": kl, "entropy": ent}


# ---------------------------------------------------------------- the GPT
def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mu) / torch.sqrt(var + eps) * g + b


def gelu_tanh(x):
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    return 0.5 * x * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def gpt_forward(P, cfg, tokens):
    B, T = tokens.shape
    C, H = cfg["dModel"], cfg["nHeads"]
    D = C // H
    x = P["wte"][tokens] + P["wpe"][torch.arange(T)].unsqueeze(0)  # [B, T, C]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["nLayers"]):
        p = lambda n: P[f"h.{i}.{n}"]  # noqa: E731
        h = layer_norm(x, p("ln_1.weight"), p("ln_1.bias"))
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        s = (q @ k.transpose(-1, -2)) / np.sqrt(D)
        s = s.masked_fill(~causal, float("-inf"))
        y = torch.softmax(s, dim=-1) @ v
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = layer_norm(x, p("ln_2.weight"), p("ln_2.bias"))
        h = gelu_tanh(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"))
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = layer_norm(x, P["ln_f.weight"], P["ln_f.bias"])
    return x @ P["lm_head.weight"]


# ---------------------------------------------------------------- cases
def run_logits_case(case, d, out):
    batch = build_batch(case)
    shape = case["logitsShape"]
    logits_np = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(shape)
    logits = torch.tensor(logits_np.astype(np.float64)).to(DT).requires_grad_(True)
    parts = pg_loss(logits, batch, case["loss"])
    (g,) = torch.autograd.grad(parts["loss"], logits)
    for k, v in parts.items():
        out[k] = v.detach()
    out["dLogits"] = g
    out["advantages"] = batch["advantages"]
    out["mask"] = batch["mask"]


def run_model_case(case, d, out):
    batch = build_batch(case)
    cfg = case["model"]
    P0 = read_safetensors(os.path.join(d, "weights.safetensors"))
    names = list(case["paramOrder"])
    P = {n: P0[n].clone().requires_grad_(True) for n in names}
    logits = gpt_forward(P, cfg, batch["tokens"])
    parts = pg_loss(logits, batch, case["loss"])
    grads = torch.autograd.grad(parts["loss"], [P[n] for n in names], allow_unused=True)
    grads = [torch.zeros_like(P[n]) if g is None else g for n, g in zip(names, grads)]
    out["logits"] = logits.detach()
    for k, v in parts.items():
        out[k] = v.detach()
    for n, g in zip(names, grads):
        out[f"grad/{n}"] = g
    clip_and_adamw(case, P0, names, grads, out)


def clip_and_adamw(case, P0, names, grads, out):
    """g <- g*min(1, c/||g||) (||g|| over all parameters together), then one torch.optim.AdamW step."""
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    out["gradNorm"] = norm
    c = case["train"]["maxGradNorm"]
    scale = min(1.0, c / max(norm.item(), 1e-12)) if c > 0 else 1.0
    a = case["adam"]
    params = {n: P0[n].clone().requires_grad_(True) for n in names}
    decay_all = not a.get("decayMatricesOnly", False)
    wd = a.get("weightDecay", 0.0)
    decayed = [n for n in names if decay_all or params[n].dim() >= 2]
    groups = [
        {"params": [params[n] for n in decayed], "weight_decay": wd},
        {"params": [params[n] for n in names if n not in decayed], "weight_decay": 0.0},
    ]
    # AdamW: theta <- theta*(1 - lr*wd); m, v moments; theta <- theta - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    opt = torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=a["learningRate"],
        betas=(a.get("beta1", 0.9), a.get("beta2", 0.999)),
        eps=a.get("epsilon", 1e-8),
    )
    for n, g in zip(names, grads):
        params[n].grad = (g * scale).clone()
    opt.step()
    for n in names:
        out[f"after/{n}"] = params[n].detach()


def run_adam_case(case, d, out):
    """The optimiser alone, on gradients given as float32 (grads.f32, parameters in paramOrder)."""
    names = list(case["paramOrder"])
    P0 = read_safetensors(os.path.join(d, "weights.safetensors"))
    flat = np.fromfile(os.path.join(d, "grads.f32"), dtype="<f4").astype(np.float64)
    grads, off = [], 0
    for n in names:
        k = P0[n].numel()
        grads.append(torch.tensor(flat[off : off + k]).reshape(P0[n].shape).to(DT))
        off += k
    clip_and_adamw(case, P0, names, grads, out)


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    out = {}
    run = {"logits": run_logits_case, "model": run_model_case, "adam": run_adam_case}[case["kind"]]
    run(case, d, out)
    index, blobs, off = {}, [], 0
    for k, v in out.items():
        a = v.detach().to(torch.float64).contiguous().numpy().astype("<f8")
        index[k] = {"shape": list(a.shape), "offset": off, "length": int(a.size)}
        blobs.append(a.tobytes())
        off += int(a.size)
    with open(os.path.join(d, "result.bin"), "wb") as f:
        f.write(b"".join(blobs))
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump({"torch": torch.__version__, "arrays": index}, f)


if __name__ == "__main__":
    main()
