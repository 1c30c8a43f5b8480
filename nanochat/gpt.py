"""
The nanochat GPT on minigrad, line for line with Karpathy's nanochat gpt.py (its first public
architecture):
- rotary embeddings (half-split), no positional embeddings
- QK norm
- untied weights for token embedding and lm_head
- relu² activation in the MLP
- RMSNorm without learnable parameters
- no bias in the linear layers
- grouped-query attention (n_kv_head <= n_head)
- logit softcap
Differences from the PyTorch original: everything is float32 (nanochat keeps rotary tables and,
on GPU, activations in bfloat16). This file is the model only: generation (the KV caches,
sampling, Engine) lives in nanochat/engine.py, as in nanochat.
"""
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from minigrad import Tensor, nn
from minigrad.nn import functional as F
from minigrad.optim import AdamW, Muon


@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # number of query heads
    n_kv_head: int = 6  # number of key/value heads (GQA when fewer than n_head)
    n_embd: int = 768
    rope_base: float = 10000.0
    softcap: float = 15.0
    norm_eps: float = 1.1920928955078125e-07  # RMSNorm's eps: float32's machine epsilon, F.rms_norm's default

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"GPTConfig.{f.name} must be a positive number, got {value!r}")
            if f.type is int and not isinstance(value, (int, np.integer)):  # 2.0 too: range(2.0) fails later
                raise ValueError(f"GPTConfig.{f.name} must be an integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = n_embd / n_head = {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)


def norm(x, eps=None):
    # purely functional RMSNorm, no learnable parameters
    return F.rms_norm(x, eps=eps)


def apply_rotary_emb(x, cos, sin):
    assert x.ndim == 4  # multihead attention: (B, T, H, D)
    # split the last dim into halves x1, x2 and rotate pairs of dims: (x1 cos + x2 sin, x2 cos - x1 sin),
    # as one fused node
    return F.rotary(x, cos, sin)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.eps = config.norm_eps
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.shape

        # project the input to queries, keys and values
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)

        # rotary embeddings on queries and keys give relative positions; then QK norm
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q, self.eps), norm(k, self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)

        # the KV cache appends this step's keys and values after the cached ones
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tq, Tk = q.shape[2], k.shape[2]  # queries in this forward, keys in total

        enable_gqa = self.n_head != self.n_kv_head  # each kv head serves n_head / n_kv_head query heads
        if kv_cache is not None and np.ndim(kv_cache.pos):
            # a cache of rows at their own positions (batched serving, engine.BatchKVCache): each query
            # sees its own row's keys up to itself
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_cache.attn_mask(Tq), enable_gqa=enable_gqa)
        elif kv_cache is None or Tq == Tk:
            # training, or a prefill of an empty cache: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
        elif Tq == 1:
            # decoding one token: it attends to every cached key
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=enable_gqa)
        else:
            # a chunk on top of a cache: the whole prefix, then causal within the chunk (bottom-right aligned)
            prefix_len = Tk - Tq
            attn_mask = np.ones((Tq, Tk), dtype=bool)
            attn_mask[:, prefix_len:] = np.tril(np.ones((Tq, Tq), dtype=bool))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=enable_gqa)

        # re-assemble the heads side by side and project back to the residual stream
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, H, T, D) -> (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        x = self.c_fc(x)  # (B, T, C) -> (B, T, 4C)
        x = F.relu_squared(x)  # relu(x).square(), one fused node
        return self.c_proj(x)  # (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)
        self.eps = config.norm_eps

    def forward(self, x, cos_sin, kv_cache):
        x = x + self.attn(norm(x, self.eps), cos_sin, kv_cache)
        x = x + self.mlp(norm(x, self.eps))
        return x


class GPT(nn.Module):
    def __init__(self, config, seed=0):
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, layer_idx) for layer_idx in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # rotary tables for 10x the training length, so generation can run past it; plain arrays, not state
        self.rotary_seq_len = config.sequence_len * 10
        self.cos, self.sin = precompute_rotary_embeddings(self.rotary_seq_len, config.head_dim, config.rope_base)
        if not nn.init_skipped():  # under nn.skip_init() a loader fills in every weight
            self.init_weights(seed)

    def init_weights(self, seed=0):
        rng = np.random.default_rng(seed)
        for name, p in self.named_parameters():
            if name == "transformer.wte.weight":
                p.data[...] = rng.standard_normal(p.shape)
            elif name == "lm_head.weight" or name.endswith("c_proj.weight"):
                p.data[...] = 0  # the residual branches and the classifier start at zero
            else:  # https://arxiv.org/pdf/2310.17813
                fan_out, fan_in = p.shape
                std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
                p.data[...] = rng.normal(0.0, std, p.shape)

    def estimate_flops(self):
        """Estimated FLOPs per token (forward + backward), as nanochat counts them.
        Ref: https://arxiv.org/abs/2204.02311"""
        nparams = self.num_parameters()
        nparams_embedding = self.transformer["wte"].weight.numel()
        l, h, q, t = self.config.n_layer, self.config.n_head, self.config.head_dim, self.config.sequence_len
        return 6 * (nparams - nparams_embedding) + 12 * l * h * q * t

    def setup_optimizers(self, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0):
        """nanochat's split: AdamW for the embedding and lm_head, Muon for the matrices in the blocks."""
        matrix_params = self.transformer["h"].parameters()
        embedding_params = self.transformer["wte"].parameters()
        lm_head_params = self.lm_head.parameters()
        # AdamW learning rates scale as 1/sqrt(d_model), having been tuned at d_model = 768
        dmodel_lr_scale = (self.config.n_embd / 768) ** -0.5
        adamw = AdamW([dict(params=lm_head_params, lr=unembedding_lr * dmodel_lr_scale),
                       dict(params=embedding_params, lr=embedding_lr * dmodel_lr_scale)],
                      betas=(0.8, 0.95), eps=1e-10, weight_decay=weight_decay)
        muon = Muon(matrix_params, lr=matrix_lr, momentum=0.95)
        optimizers = [adamw, muon]
        for opt in optimizers:
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        return optimizers

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        idx = _token_array(idx, "idx", self.config.vocab_size)
        B, T = idx.shape

        # slice the rotary tables to the positions this forward runs, offset by what the cache holds
        T0 = 0 if kv_cache is None else kv_cache.pos  # a vector of per-row lengths for a BatchKVCache
        if np.max(T0) + T > self.rotary_seq_len:
            raise ValueError(f"positions {np.max(T0)}..{np.max(T0) + T - 1} run past the rotary table of "
                             f"{self.rotary_seq_len} positions (10 x sequence_len)")
        if np.ndim(T0):
            positions = T0[:, None] + np.arange(T)  # (B, T): row b continues from its own length
            cos_sin = Tensor(self.cos[0, positions]), Tensor(self.sin[0, positions])  # (B, T, 1, D/2) each
        else:
            cos_sin = Tensor(self.cos[:, T0:T0 + T]), Tensor(self.sin[:, T0:T0 + T])  # (1, T, 1, D/2) each

        # the trunk of the transformer
        x = self.transformer["wte"](idx)  # (B, T) -> (B, T, C)
        x = norm(x, self.config.norm_eps)
        for block in self.transformer["h"]:
            x = block(x, cos_sin, kv_cache)
        x = norm(x, self.config.norm_eps)
        if kv_cache is not None:
            kv_cache.advance(T)

        # the lm_head, then the logit softcap
        softcap = self.config.softcap
        logits = self.lm_head(x)  # (B, T, C) -> (B, T, V)
        if targets is None:
            return softcap * (logits / softcap).tanh()
        targets = _token_array(targets, "targets", self.config.vocab_size, allow_ignore=True)
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {targets.shape} differs from idx shape {idx.shape}")
        # training: the softcap softcap * tanh(logits / softcap) is fused into the loss kernel
        return F.cross_entropy(logits.view(B * T, -1), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction, softcap=softcap)


def precompute_rotary_embeddings(seq_len, head_dim, base=10000.0):
    channel_range = np.arange(0, head_dim, 2, dtype=np.float32)
    inv_freq = 1.0 / (base ** (channel_range / head_dim))
    t = np.arange(seq_len, dtype=np.float32)
    freqs = np.outer(t, inv_freq).astype(np.float32)  # (seq_len, head_dim/2)
    # add batch and head dims for broadcasting against (B, T, H, D/2)
    return np.cos(freqs)[None, :, None, :], np.sin(freqs)[None, :, None, :]


def _token_array(x, name, vocab_size, allow_ignore=False):
    x = np.asarray(x.data if isinstance(x, Tensor) else x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array of shape (B, T), got {x.dtype} {x.shape}")
    low = -1 if allow_ignore else 0
    if x.size and (x.min() < low or x.max() >= vocab_size):
        allowed = "-1 (ignored) or " if allow_ignore else ""
        raise ValueError(f"{name} holds ids in [{x.min()}, {x.max()}], but they must be {allowed}"
                         f"in [0, {vocab_size})")
    return x.astype(np.int64, copy=False)
