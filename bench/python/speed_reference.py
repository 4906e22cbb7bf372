#!/usr/bin/python3
"""The PyTorch side of bench/speed.ts: a worker that answers one JSON request per stdin line with
one JSON line on stdout, so the TypeScript side can alternate rlaif and PyTorch in one run.

Each timed request sets the thread count first: torch.set_num_threads(n) for PyTorch's own
kernels and openblas_set_num_threads(n) for the BLAS (Debian's OpenBLAS pthreads build, which
torch.set_num_threads does not reach; the process starts with OPENBLAS_NUM_THREADS and
OMP_NUM_THREADS set to the largest count asked). Times are measured here, around the work only.

The learner step is what rlaif's ReinforceLearner.step does, written from the equations on the
same trajectories (the run's defaults: KL in the reward, RLOO advantages):
    r_k  = per-token rewards (else the scalar reward on the last token), minus beta*KL_k when the
           KL is in the reward; KL_k = k1 = log pi_b - log pi_ref, or k3 = (rho - 1) - log rho
    R_k  = sum_{j>=k} gamma^(j-k) r_j;  A_{i,k} = R_{i,k} - mean_{j in group(i), j != i} R_{j,0}
    L    = -(1/N) sum m log pi(a) A + beta_loss (1/N) sum m KL - c_ent (1/N) sum m H
then backward, global-norm clipping (torch.nn.utils.clip_grad_norm_) and one torch.optim.Adam(W)
step. Requests: hello, load, batch, learner_check, learner_step, logits, logprobs, sample,
sgemm, rss, unload (see `OPS`).
"""

import ctypes
import json
import os
import resource
import sys
import time

import numpy as np
import torch

from speed_models import BOS, EOS, build, read_checkpoint, right_padded

try:
    OPENBLAS = ctypes.CDLL("libopenblas.so.0")
    OPENBLAS.openblas_get_config.restype = ctypes.c_char_p
except (OSError, AttributeError):
    OPENBLAS = None

try:
    import psutil

    PROCESS = psutil.Process()
except ImportError:
    PROCESS = None

KINDS = {}  # kind -> {"config", "weights", "model" (sampling, scoring), "new_learner", "learner" (timed)}
MATRICES = {}  # (m, k, n) -> the two operands of the sgemm request


def set_threads(n):
    torch.set_num_threads(n)
    if OPENBLAS is not None:
        OPENBLAS.openblas_set_num_threads(n)


def timed(threads, work):
    set_threads(threads)
    start = time.perf_counter()
    out = work()
    return (time.perf_counter() - start) * 1000.0, out


def rss_mb():
    if PROCESS is not None:
        return PROCESS.memory_info().rss / 2**20
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------- the learner's batch and loss
def kl_of(lp, ref, estimator):
    if estimator == "k1":
        return lp - ref
    log_r = ref - lp
    return np.exp(log_r) - 1.0 - log_r


def layout(trajs, s):
    """Rows [BOS, prompt, completion] right-padded with EOS; input = row[:-1], action = row[1:];
    completion token k of row i sits at input position |prompt_i| + k."""
    if s["baseline"] != "rloo":
        raise ValueError("the PyTorch learner implements baseline 'rloo' only")
    rows = [[BOS, *t["prompt"], *t["completion"]] for t in trajs]
    b, t_len = len(rows), max(len(r) for r in rows) - 1
    beta = s["klCoef"] if s["klIn"] == "reward" else 0.0
    returns = []
    for t in trajs:
        c = len(t["completion"])
        r = np.array(t["tokenRewards"], dtype=np.float64) if t["tokenRewards"] else np.zeros(c)
        if not t["tokenRewards"]:
            r[-1] = t["reward"]
        r = r - beta * kl_of(np.array(t["behaviour"]), np.array(t["reference"]), s["klEstimator"])
        R, run = np.zeros(c), 0.0
        for k in range(c - 1, -1, -1):
            run = r[k] + s["gamma"] * run
            R[k] = run
        returns.append(R)
    groups = {}
    for i, t in enumerate(trajs):
        groups.setdefault(t["group"], []).append(i)
    tokens = np.full((b, t_len), EOS, dtype=np.int64)
    actions = np.full((b, t_len), EOS, dtype=np.int64)
    mask, adv, ref, beh = (np.zeros((b, t_len), dtype=np.float32) for _ in range(4))
    for i, (row, t) in enumerate(zip(rows, trajs)):
        tokens[i, : len(row) - 1] = row[:-1]
        actions[i, : len(row) - 1] = row[1:]
        others = [j for j in groups[t["group"]] if j != i]
        base = np.mean([returns[j][0] for j in others]) if others else 0.0
        at = slice(len(t["prompt"]), len(t["prompt"]) + len(t["completion"]))
        mask[i, at] = 1.0
        adv[i, at] = returns[i] - base
        ref[i, at] = t["reference"]
        beh[i, at] = t["behaviour"]
    as_t = torch.from_numpy
    src = [1 + len(t["prompt"]) for t in trajs]
    return {"tokens": as_t(tokens), "actions": as_t(actions), "mask": as_t(mask), "adv": as_t(adv), "ref": as_t(ref), "beh": as_t(beh), "src": src}


def pg_loss(logits, batch, s):
    logp = torch.log_softmax(logits, -1)
    m = batch["mask"]
    chosen = logp.gather(-1, batch["actions"][..., None])[..., 0] * m
    n = m.sum().clamp(min=1.0)
    adv = batch["adv"]
    if s["offPolicy"] == "none":
        surr = chosen * adv
    else:
        # rho_t = exp(log pi_theta(a_t) - log pi_behaviour(a_t)); 1 at padding (both are 0 there)
        rho = torch.exp(chosen - batch["beh"] * m)
        if s["offPolicy"] == "ppo-clip":
            eps = s["clipEpsilon"]
            surr = torch.minimum(rho * adv, torch.clamp(rho, 1 - eps, 1 + eps) * adv)
        elif s["offPolicy"] == "truncated":
            surr = torch.clamp(rho, max=s["truncation"]).detach() * adv * chosen
        else:
            raise ValueError(f"unknown offPolicy {s['offPolicy']!r}")
    pg = -(surr * m).sum() / n
    ref = batch["ref"] * m
    kl_t = chosen - ref if s["klEstimator"] == "k1" else torch.exp(ref - chosen) - 1.0 - (ref - chosen)
    kl = (kl_t * m).sum() / n
    entropy = (-(torch.exp(logp) * logp).sum(-1) * m).sum() / n
    beta_loss = s["klCoef"] if s["klIn"] == "loss" else 0.0
    return pg + beta_loss * kl - s["entropyCoef"] * entropy, entropy


class Learner:
    def __init__(self, kind, entry, trajs, settings):
        self.model = build(kind, entry["config"], entry["weights"], trainable=True)
        self.params = self.model.parameters()
        self.trajs, self.s = trajs, settings
        wd = settings["weightDecay"]
        opt = torch.optim.AdamW if wd > 0 else torch.optim.Adam
        self.opt = opt(self.params, lr=settings["learningRate"], weight_decay=wd)

    def step(self, lr):
        batch = layout(self.trajs, self.s)
        loss, entropy = pg_loss(self.model.forward(batch["tokens"], batch["src"]), batch, self.s)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        c = self.s["maxGradNorm"]
        norm = torch.nn.utils.clip_grad_norm_(self.params, c if c > 0 else float("inf"))
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        return {"loss": loss.item(), "gradNorm": float(norm), "entropy": entropy.item()}


# ---------------------------------------------------------------- scoring and sampling
def score_rows(prompts, completions):
    rows = [[BOS, *p, *c] for p, c in zip(prompts, completions)]
    full, _ = right_padded(rows, EOS)
    width = full.shape[1]
    return full[:, :-1], full[:, 1:], [min(1 + len(p), width - 1) for p in prompts]


def logprobs(model, prompts, completions):
    with torch.inference_mode():
        x, y, src = score_rows(prompts, completions)
        lp = torch.log_softmax(model.forward(x, src), -1).gather(-1, y[..., None])[..., 0]
        return [lp[i, len(p) : len(p) + len(c)].tolist() for i, (p, c) in enumerate(zip(prompts, completions))]


def sample(model, rows, max_new, seed, forced):
    """max_new tokens per row (no early stop), drawn from softmax(logits) or taken from `forced`;
    returns each token's log pi. One prefill, then one cached step per token but the last."""
    with torch.inference_mode():
        gen = torch.Generator().manual_seed(seed)
        logits, state = model.start(rows)
        lps = []
        for t in range(max_new):
            logp = torch.log_softmax(logits, -1)
            tok = torch.multinomial(logp.exp(), 1, generator=gen)[:, 0] if forced is None else forced[:, t]
            lps.append(logp.gather(1, tok[:, None])[:, 0])
            if t + 1 < max_new:
                logits, state = model.step(tok, state)
        return torch.stack(lps, 1)


# ---------------------------------------------------------------- requests
def op_hello(_):
    config = OPENBLAS.openblas_get_config().decode() if OPENBLAS is not None else None
    return {"torch": torch.__version__, "numpy": np.__version__, "openblas": config, "psutil": PROCESS is not None}


def op_load(r):
    kind, config, weights = read_checkpoint(r["path"])
    if kind != r["kind"]:
        raise ValueError(f"{r['path']} holds a {kind} model, not {r['kind']}")
    KINDS[kind] = {"config": config, "weights": weights, "model": build(kind, config, weights, trainable=False)}
    return {"params": sum(w.numel() for w in weights.values())}


def op_batch(r):
    entry = KINDS[r["kind"]]
    entry["new_learner"] = lambda: Learner(r["kind"], entry, r["trajectories"], r["settings"])
    entry["learner"] = entry["new_learner"]()
    return {}


def op_learner_check(r):
    """Losses of a fresh learner's first steps at the given learning rates (one thread: reproducible)."""
    set_threads(1)
    learner = KINDS[r["kind"]]["new_learner"]()
    return {"steps": [learner.step(lr) for lr in r["lrs"]]}


def op_learner_step(r):
    learner = KINDS[r["kind"]]["learner"]
    ms, out = timed(r["threads"], lambda: learner.step(r["lr"]))
    return {"ms": ms, **out, "rssMb": rss_mb()}


def op_logits(r):
    """Logits of the learner's batch at the loaded weights, written float32 to r['out']."""
    entry = KINDS[r["kind"]]
    set_threads(1)
    with torch.inference_mode():
        batch = layout(entry["learner"].trajs, entry["learner"].s)
        z = entry["model"].forward(batch["tokens"], batch["src"])
    z.numpy().astype("<f4").tofile(r["out"])
    return {"shape": list(z.shape)}


def op_logprobs(r):
    model = KINDS[r["kind"]]["model"]
    ms, lp = timed(r["threads"], lambda: logprobs(model, r["prompts"], r["completions"]))
    return {"ms": ms, **({"logprobs": lp} if r.get("values") else {})}


def op_sample(r):
    model = KINDS[r["kind"]]["model"]
    rows = [[BOS, *p] for p in r["prompts"]]
    forced = torch.tensor(r["forced"]) if r.get("forced") else None
    ms, lp = timed(r["threads"], lambda: sample(model, rows, r["maxNewTokens"], r["seed"], forced))
    return {"ms": ms, **({"logprobs": lp.tolist()} if forced is not None else {})}


def op_sgemm(r):
    """One float32 product [m, k] x [k, n]."""
    m, k, n = r["shape"]
    a, b = MATRICES.setdefault((m, k, n), (torch.randn(m, k), torch.randn(k, n)))
    ms, _ = timed(r["threads"], lambda: a @ b)
    return {"ms": ms, "gflops": 2 * m * k * n / (ms / 1000) / 1e9}


def op_rss(_):
    return {"rssMb": rss_mb(), "maxRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def op_unload(r):
    KINDS.pop(r["kind"], None)
    return {}


OPS = {
    "hello": op_hello,
    "load": op_load,
    "batch": op_batch,
    "learner_check": op_learner_check,
    "learner_step": op_learner_step,
    "logits": op_logits,
    "logprobs": op_logprobs,
    "sample": op_sample,
    "sgemm": op_sgemm,
    "rss": op_rss,
    "unload": op_unload,
}


def main():
    torch.manual_seed(0)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            res = {"ok": True, **OPS[req["op"]](req)}
        except Exception as e:  # the TypeScript side turns this into an error naming the request
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
