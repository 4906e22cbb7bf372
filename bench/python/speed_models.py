"""PyTorch float32 twins of rlaif's four policy kinds, for the speed benchmark (bench/speed.ts).

Written from the models' equations, with the checkpoint's own weights (safetensors, matrices
stored [in, out]), in the form a PyTorch user would write them (fused library modules where they
exist: nn.GRU / nn.LSTM, F.layer_norm, F.gelu):

  transformer  pre-LN GPT, learned positions, tanh-GELU, causal multi-head attention, untied head.
               Masked keys (future, left padding) get an additive -1e9, so their softmax weight
               is exactly 0 and a fully masked padding query never turns into NaN.
  gru / lstm   embedding -> stacked cells -> linear head. rlaif's gate blocks are PyTorch's
               (r, z, n / i, f, g, o) with the matrices transposed, so nn.GRU/nn.LSTM take them as is.
  seq2seq      GRU encoder over BOS + prompt, GRU decoder from the encoder's final states reading
               GO (BOS) and then the completion, Luong attention a = softmax(s^T W_a e),
               c = a e, h~ = tanh([c; s] W_c + b_c), logits = h~ W_out + b_out. Positions before
               the prompt's last token take the encoder head's logits (next source token), so a
               row's logits line up with a causal LM's: position t predicts token t + 1.

Every model has forward(tokens, source_lengths) -> logits [B, T, V] (training and scoring) and
start(rows) / step(tokens, state) for incremental decoding (KV cache concatenated per token, or
the recurrent state) that returns only the last position's logits [B, V].
"""

import json
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

BOS, EOS = 256, 257
MASKED = -1e9
LN_EPS = 1e-5


def read_checkpoint(path):
    """Header u64 LE n, n bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__}, data."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    weights = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise ValueError(f"{path}: {name} has dtype {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(t["shape"])
        weights[name] = torch.from_numpy(arr.copy())
    return meta["kind"], json.loads(meta["config"]), weights


def affine(x, w, b):
    """x W + b over the last axis (W stored [in, out])."""
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[1])


def left_padded(rows):
    """Rows left-padded to one width: tokens, positions from each row's first real token, key mask."""
    width = max(len(r) for r in rows)
    tok = torch.zeros(len(rows), width, dtype=torch.long)
    pos = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        pad = width - len(r)
        tok[i, pad:] = torch.tensor(r)
        pos[i, pad:] = torch.arange(len(r))
        mask[i, pad:] = True
    return tok, pos, mask


def right_padded(rows, fill=BOS):
    """Rows right-padded to one width, and their lengths."""
    width = max(len(r) for r in rows)
    tok = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        tok[i, : len(r)] = torch.tensor(r)
    return tok, torch.tensor([len(r) for r in rows])


class Gpt:
    def __init__(self, P, cfg):
        self.P, self.cfg = P, cfg
        self.h = cfg["nHeads"]
        self.c = cfg["dModel"]
        self.d = self.c // self.h

    def parameters(self):
        return list(self.P.values())

    def _blocks(self, tokens, positions, bias, past):
        """Every layer over new tokens [B, S] after the cached prefix; bias [B|1, 1, S, P+S]."""
        P, h, d = self.P, self.h, self.d
        b, s = tokens.shape
        x = F.embedding(tokens, P["wte"]) + F.embedding(positions, P["wpe"])  # [B, S, C]
        cache = []
        for i in range(self.cfg["nLayers"]):
            p = lambda n: P[f"h.{i}.{n}"]  # noqa: E731
            y = F.layer_norm(x, (self.c,), p("ln_1.weight"), p("ln_1.bias"), LN_EPS)
            qkv = affine(y, p("attn.c_attn.weight"), p("attn.c_attn.bias"))  # [B, S, 3C]
            q, k, v = qkv.view(b, s, 3, h, d).permute(2, 0, 3, 1, 4)  # each [B, H, S, D]
            if past is not None:
                k = torch.cat([past[i][0], k], 2)  # [B, H, P+S, D]
                v = torch.cat([past[i][1], v], 2)
            cache.append((k, v))
            att = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / d**0.5) + bias, -1)  # [B, H, S, P+S]
            y = (att @ v).transpose(1, 2).reshape(b, s, self.c)
            x = x + affine(y, p("attn.c_proj.weight"), p("attn.c_proj.bias"))
            y = F.layer_norm(x, (self.c,), p("ln_2.weight"), p("ln_2.bias"), LN_EPS)
            y = F.gelu(affine(y, p("mlp.c_fc.weight"), p("mlp.c_fc.bias")), approximate="tanh")
            x = x + affine(y, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
        return x, cache

    def _head(self, x):
        x = F.layer_norm(x, (self.c,), self.P["ln_f.weight"], self.P["ln_f.bias"], LN_EPS)
        return x @ self.P["lm_head.weight"]

    def forward(self, tokens, source_lengths=None):
        b, t = tokens.shape
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        bias = torch.zeros(t, t).masked_fill(~causal, MASKED)
        x, _ = self._blocks(tokens, torch.arange(t).expand(b, t), bias, None)
        return self._head(x)

    def start(self, rows):
        tok, pos, mask = left_padded(rows)
        w = tok.shape[1]
        allowed = torch.ones(w, w, dtype=torch.bool).tril()[None] & mask[:, None, :]  # [B, S, S]
        bias = torch.zeros(allowed.shape).masked_fill(~allowed, MASKED)[:, None]  # [B, 1, S, S]
        x, cache = self._blocks(tok, pos, bias, None)
        lens = torch.tensor([len(r) for r in rows])
        return self._head(x[:, -1]), {"cache": cache, "mask": mask, "pos": lens}

    def step(self, tokens, state):
        mask = torch.cat([state["mask"], torch.ones(len(tokens), 1, dtype=torch.bool)], 1)
        bias = torch.zeros(mask.shape).masked_fill(~mask, MASKED)[:, None, None, :]  # [B, 1, 1, P+1]
        x, cache = self._blocks(tokens[:, None], state["pos"][:, None], bias, state["cache"])
        return self._head(x[:, -1]), {"cache": cache, "mask": mask, "pos": state["pos"] + 1}


def load_cells(module, P, prefix, layers):
    """Copy rlaif's [in, G*H] cell matrices into an nn.GRU/nn.LSTM ([G*H, in])."""
    with torch.no_grad():
        for l in range(layers):
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                w = P[f"{prefix}.{l}.{n}"]
                getattr(module, f"{n}_l{l}").copy_(w.t() if w.dim() == 2 else w)
    return module


class Rnn:
    def __init__(self, P, cfg):
        cls = torch.nn.GRU if cfg["kind"] == "gru" else torch.nn.LSTM
        self.cfg = cfg
        cell = cls(cfg["dModel"], cfg["hidden"], num_layers=cfg["nLayers"], batch_first=True)
        self.rnn = load_cells(cell, P, "h", cfg["nLayers"])
        self.wte, self.head_w, self.head_b = P["wte"], P["lm_head.weight"], P["lm_head.bias"]

    def parameters(self):
        return [self.wte, *self.rnn.parameters(), self.head_w, self.head_b]

    def forward(self, tokens, source_lengths=None):
        out, _ = self.rnn(F.embedding(tokens, self.wte))  # [B, T, H]
        return affine(out, self.head_w, self.head_b)

    def start(self, rows):
        tok, lens = right_padded(rows)
        packed = pack_padded_sequence(F.embedding(tok, self.wte), lens, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)  # final state of each row's last real token
        top = (state[0] if isinstance(state, tuple) else state)[-1]  # [B, H]
        return affine(top, self.head_w, self.head_b), state

    def step(self, tokens, state):
        out, state = self.rnn(F.embedding(tokens[:, None], self.wte), state)
        return affine(out[:, 0], self.head_w, self.head_b), state


class Seq2Seq:
    def __init__(self, P, cfg):
        d, h, n = cfg["dModel"], cfg["hidden"], cfg["nLayers"]
        self.cfg, self.P = cfg, P
        self.enc = load_cells(torch.nn.GRU(d, h, num_layers=n, batch_first=True), P, "enc", n)
        self.dec = load_cells(torch.nn.GRU(d, h, num_layers=n, batch_first=True), P, "dec", n)
        # embedding, attention and both heads (the GRUs' weights live in their modules)
        self.own = {k: w for k, w in P.items() if not k.startswith(("enc.", "dec."))}

    def parameters(self):
        return [*self.own.values(), *self.enc.parameters(), *self.dec.parameters()]

    def _encode(self, src, lens):
        """Memory e [B, S, H], keys e W_a, the padding bias [B, 1, S], the final states."""
        p = self.own
        x = pack_padded_sequence(F.embedding(src, p["wte"]), lens, batch_first=True, enforce_sorted=False)
        out, h = self.enc(x)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        keys = memory @ p["attn.weight"]
        real = torch.arange(src.shape[1])[None] < lens[:, None]
        bias = torch.zeros(real.shape).masked_fill(~real, MASKED)[:, None]
        return memory, keys, bias, h

    def _attend(self, s, memory, keys, bias):
        """Decoder states s [B, J, H] -> logits [B, J, V]."""
        p = self.own
        alpha = torch.softmax(s @ keys.transpose(1, 2) + bias, -1)  # [B, J, S]
        both = torch.cat([alpha @ memory, s], -1)  # [c; s]
        ht = torch.tanh(affine(both, p["attn.combine.weight"], p["attn.combine.bias"]))
        return affine(ht, p["lm_head.weight"], p["lm_head.bias"])

    def forward(self, tokens, source_lengths=None):
        b, t = tokens.shape
        v = self.cfg["vocabSize"]
        src = torch.tensor(source_lengths if source_lengths is not None else [t] * b)
        s_max, d_len = int(src.max()), int((t - src + 1).max())
        memory, keys, bias, h = self._encode(tokens[:, :s_max], src)
        enc_logits = affine(memory, self.own["enc_head.weight"], self.own["enc_head.bias"])  # [B, S, V]
        # decoder step j reads GO (j = 0), then x_{S-1+j}; steps past a row's end read GO and are ignored
        j = torch.arange(d_len)[None]
        at = src[:, None] - 1 + j
        ids = tokens.gather(1, at.clamp(max=t - 1))
        ids = torch.where((j == 0) | (at >= t), torch.full_like(ids, BOS), ids)
        s, _ = self.dec(F.embedding(ids, self.own["wte"]), h)
        dec_logits = self._attend(s, memory, keys, bias)  # [B, J, V]
        # position i: the encoder head's logits before the prompt's last token, else decoder step i - S + 1
        i = torch.arange(t)[None].expand(b, t)
        from_enc = (i < src[:, None] - 1)[..., None]
        e = enc_logits.gather(1, i.clamp(max=s_max - 1)[..., None].expand(b, t, v))
        d = dec_logits.gather(1, (i - src[:, None] + 1).clamp(0, d_len - 1)[..., None].expand(b, t, v))
        return torch.where(from_enc, e, d)

    def start(self, rows):
        src, lens = right_padded(rows)
        memory, keys, bias, h = self._encode(src, lens)
        go = torch.full((len(rows), 1), BOS, dtype=torch.long)
        s, h = self.dec(F.embedding(go, self.own["wte"]), h)
        return self._attend(s, memory, keys, bias)[:, 0], (memory, keys, bias, h)

    def step(self, tokens, state):
        memory, keys, bias, h = state
        s, h = self.dec(F.embedding(tokens[:, None], self.own["wte"]), h)
        return self._attend(s, memory, keys, bias)[:, 0], (memory, keys, bias, h)


def build(kind, config, weights, trainable):
    """A model over copies of `weights` (leaf tensors that require grad when `trainable`)."""
    P = {n: w.clone().requires_grad_(trainable) for n, w in weights.items()}
    model = Gpt(P, config) if kind == "transformer" else Seq2Seq(P, config) if kind == "seq2seq" else Rnn(P, config)
    for p in model.parameters():
        p.requires_grad_(trainable)
    return model
