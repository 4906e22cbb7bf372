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

  The other estimators ("estimators" and "sequences" cases):
      KL in the reward   r'_k = r_k - beta*KL_k, KL_k = k1 or k3 of (log pi_behaviour, log pi_ref)
      baselines          A_{i,k} = R_{i,k} - b_i with b_i from the sequence returns R_{i,0}:
                           none: 0;  moving-average: b given;
                           rloo:  mean of R_{j,0} over the other samples j of i's group (0 if alone)
                           group: A = (R_{i,k} - mean_g R_0) / (std_g R_0 + 1e-6)   (population std)
                           batch: A = (R_{i,k} - mean R) / (std R + 1e-6) over every token of the batch
                           (either divisor is 1 when the std is <= 1e-6: equal returns are only centred)
      importance ratio   rho = pi(a)/pi_behaviour(a) = exp(log pi(a) - log pi_behaviour(a))
      PPO-clip           s = min(rho*A, clamp(rho, 1-eps, 1+eps)*A); clipped where the clamped term is smaller
      truncated IS       s = stopgrad(min(rho, c))*A*log pi(a); clipped where rho > c
                         L_pg = -(1/N) sum m*s, clip fraction = (1/N) sum m*clipped
      moving average     b <- mean(R) on the first batch, then b <- d*b + (1-d)*mean(R) (all tokens)
      adaptive beta      KL = mean over samples of sum_k k1_k; e = clamp((KL - target)/target, -0.2, 0.2);
                         beta <- beta*(1 + e*n/horizon), n samples in the batch

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


# ---------------------------------------------------------------- the other estimators
def kl_of(logp, ref_logp, estimator):
    """Sampled-token KL of pi to pi_ref: k1 = log pi - log pi_ref, k3 = (r - 1) - log r, r = pi_ref/pi."""
    if estimator == "k1":
        return logp - ref_logp
    log_r = ref_logp - logp
    return (torch.exp(log_r) - 1.0) - log_r


def estimator_advantages(R, groups, est):
    """A_{i,k} from returns-to-go R (list of per-trajectory lists), per the baseline kind."""
    kind = est["baseline"]
    R = [torch.tensor(r, dtype=torch.float64) for r in R]
    R0 = torch.stack([r[0] for r in R])
    if kind == "none":
        return R
    if kind == "moving-average":
        return [r - est["movingAverage"] for r in R]
    if kind == "batch":
        allr = torch.cat(R)
        mu, sd = allr.mean(), allr.std(unbiased=False)
        return [(r - mu) / (sd + 1e-6 if sd > 1e-6 else 1.0) for r in R]
    out = []
    for i, r in enumerate(R):
        same = [j for j in range(len(R)) if groups[j] == groups[i]]
        if kind == "rloo":
            others = [j for j in same if j != i]
            b = R0[others].mean() if others else torch.tensor(0.0, dtype=torch.float64)
            out.append(r - b)
        elif kind == "group":
            g = R0[same]
            sd = g.std(unbiased=False)
            out.append((r - g.mean()) / (sd + 1e-6 if sd > 1e-6 else 1.0))
        else:
            raise ValueError(f"unknown baseline {kind}")
    return out


def estimator_batch(case, est):
    """Rewards (KL-shaped when the KL is in the reward) -> returns-to-go -> advantages, laid out
    like build_batch: completion token k of trajectory i is the action at input position |prompt_i| + k."""
    o = case["options"]
    trajs = case["trajectories"]
    rows = [[o["bosId"]] + t["promptTokens"] + t["completionTokens"] for t in trajs]
    T = max(len(r) for r in rows) - 1
    B = len(rows)
    returns = []
    for t in trajs:
        c = len(t["completionTokens"])
        if t.get("tokenRewards"):
            r = torch.tensor(t["tokenRewards"], dtype=torch.float64)
        else:
            r = torch.zeros(c, dtype=torch.float64)
            r[-1] = t["reward"]
        if est["klIn"] == "reward":
            beh = torch.tensor(t["behaviourLogprobs"], dtype=torch.float64)
            ref = torch.tensor(t["refLogprobs"], dtype=torch.float64)
            r = r - est["klCoef"] * kl_of(beh, ref, est["klEstimator"])
        returns.append(returns_to_go(r.tolist(), o["gamma"]))
    adv_rows = estimator_advantages(returns, [t["groupId"] for t in trajs], est)
    actions = np.full((B, T), o["padId"], dtype=np.int64)
    mask, adv, ref, beh = (np.zeros((B, T)) for _ in range(4))
    for i, (row, t) in enumerate(zip(rows, trajs)):
        actions[i, : len(row) - 1] = row[1:]
        s = len(t["promptTokens"])
        for k in range(len(t["completionTokens"])):
            mask[i, s + k] = 1.0
            adv[i, s + k] = float(adv_rows[i][k])
            ref[i, s + k] = t["refLogprobs"][k]
            beh[i, s + k] = t["behaviourLogprobs"][k]
    as_t = lambda a: torch.tensor(a, dtype=DT)  # noqa: E731
    return {
        "actions": torch.tensor(actions),
        "mask": as_t(mask),
        "advantages": as_t(adv),
        "refLogprobs": as_t(ref),
        "behaviourLogprobs": as_t(beh),
    }


def estimator_loss(logits, batch, est):
    z = logits.to(DT)
    logp = torch.log_softmax(z, dim=-1)
    lp_a = torch.gather(logp, -1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    m = batch["mask"]
    A = batch["advantages"] * m
    n = torch.clamp(m.sum(), min=1.0)
    mode = est["offPolicy"]
    if mode == "none":
        s = lp_a * A
        clipped = torch.zeros_like(lp_a)
    else:
        rho = torch.exp(lp_a - batch["behaviourLogprobs"])
        if mode == "ppo-clip":
            eps = est["clipEpsilon"]
            unclipped = rho * A
            clamped = torch.clamp(rho, 1.0 - eps, 1.0 + eps) * A
            s = torch.minimum(unclipped, clamped)
            clipped = (clamped < unclipped).to(DT)
        elif mode == "truncated":
            c = est["truncation"]
            w = torch.clamp(rho, max=c).detach()
            s = w * A * lp_a
            clipped = (rho > c).to(DT)
        else:
            raise ValueError(f"unknown offPolicy {mode}")
    pg = -(m * s).sum() / n
    clip_fraction = (m * clipped).sum() / n
    kl = (m * kl_of(lp_a, batch["refLogprobs"], est["klEstimator"])).sum() / n
    ent = (m * -(torch.exp(logp) * logp).sum(-1)).sum() / n
    beta_loss = est["klCoef"] if est["klIn"] == "loss" else 0.0
    loss = pg + beta_loss * kl - est["entropyCoef"] * ent
    return {"loss": loss, "pgLoss": pg, "kl": kl, "entropy": ent, "clipFraction": clip_fraction}


def run_estimators_case(case, d, out):
    """One set of logits, several estimator configurations; keys are prefixed '<name>/'."""
    logits_np = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(case["logitsShape"])
    for est in case["estimators"]:
        name = est["name"]
        batch = estimator_batch(case, est)
        logits = torch.tensor(logits_np.astype(np.float64)).to(DT).requires_grad_(True)
        parts = estimator_loss(logits, batch, est)
        (g,) = torch.autograd.grad(parts["loss"], logits)
        for k, v in parts.items():
            out[f"{name}/{k}"] = v.detach()
        out[f"{name}/dLogits"] = g
        out[f"{name}/advantages"] = batch["advantages"]


def run_sequences_case(case, d, out):
    """The moving-average baseline over a series of batches, and adaptive beta over a series of KLs."""
    dec = case["baselineDecay"]
    b, updates, bs = 0.0, 0, []
    for batch in case["returnBatches"]:
        flat = [x for row in batch for x in row]
        if flat:
            mean = sum(flat) / len(flat)
            b = mean if updates == 0 else dec * b + (1.0 - dec) * mean
            updates += 1
        bs.append(b)
    out["movingAverage"] = torch.tensor(bs, dtype=torch.float64)
    kc = case["klController"]
    beta, betas, kls = kc["beta"], [], []
    for batch in case["klBatches"]:
        per_sample = [
            sum(lb - lr for lb, lr in zip(s["behaviourLogprobs"], s["refLogprobs"])) for s in batch
        ]
        kl = sum(per_sample) / len(per_sample)
        e = min(0.2, max(-0.2, (kl - kc["target"]) / kc["target"]))
        beta = beta * (1.0 + e * len(batch) / kc["horizon"])
        kls.append(kl)
        betas.append(beta)
    out["batchKl"] = torch.tensor(kls, dtype=torch.float64)
    out["beta"] = torch.tensor(betas, dtype=torch.float64)


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
    run = {
        "logits": run_logits_case,
        "model": run_model_case,
        "adam": run_adam_case,
        "estimators": run_estimators_case,
        "sequences": run_sequences_case,
    }[case["kind"]]
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
