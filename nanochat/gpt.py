"""
The nanochat GPT on minigrad, line for line with Karpathy's nanochat gpt.py. The defaults are its
first public architecture (October 2025):
- rotary embeddings (half-split), no positional embeddings
- QK norm
- untied weights for token embedding and lm_head
- relu² activation in the MLP
- RMSNorm without learnable parameters
- no bias in the linear layers
- grouped-query attention (n_kv_head <= n_head)
- logit softcap
GPTConfig options add what nanochat gained since, one by one; GPTConfig.nanochat_2026() turns them
all on as karpathy/nanochat 92d63d4 (2026-07-03) has them:
- vocabulary padded to a multiple of 64 (logits cropped back)
- per-layer resid_lambdas and x0_lambdas (the residual stream scaled, the embedding blended back in)
- value embeddings on alternating layers, mixed into V through a sigmoid gate (ResFormer)
- smear: the previous token's embedding mixed in through a gate
- backout: the mid-layer residual subtracted before the final norm
- sliding-window attention ("SSSL": short = a quarter of the context, the last layer long)
- rotary base 100000, Q and K scaled by 1.2 after QK norm, and nanochat's init and optimizer groups
Differences from the PyTorch original: everything is float32 (nanochat keeps rotary tables and,
on GPU, activations in bfloat16). This file is the model only: generation (the KV caches,
sampling, Engine) lives in nanochat/engine.py, as in nanochat.
"""
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from minigrad import Tensor, cat, nn
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
    # what nanochat added after its first release; the defaults leave each one out
    pad_vocab_size_to: int = 1  # wte and lm_head rows rounded up to a multiple of this (nanochat: 64)
    window_pattern: str = ""  # per-layer windows tiled over the layers, e.g. "SSSL"; "" = no windows
    qk_scale: float = 1.0  # Q and K multiplied by this after QK norm (nanochat: 1.2)
    layer_lambdas: bool = False  # resid_lambdas and x0_lambdas
    value_embeds: bool = False  # value embeddings and their ve_gate on alternating layers
    smear: bool = False  # smear_gate and smear_lambda
    backout: bool = False  # backout_lambda
    recipe: str = "classic"  # init and optimizer settings: "classic" or "2026"

    @classmethod
    def nanochat_2026(cls, **sizes):
        """nanochat's architecture at karpathy/nanochat 92d63d4 (2026-07-03), at the given sizes."""
        return cls(**{**dict(pad_vocab_size_to=64, window_pattern="SSSL", rope_base=100000.0, qk_scale=1.2,
                             layer_lambdas=True, value_embeds=True, smear=True, backout=True, recipe="2026"),
                      **sizes})

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"GPTConfig.{f.name} must be True or False, got {value!r}")
            elif f.type is str:
                if not isinstance(value, str):
                    raise ValueError(f"GPTConfig.{f.name} must be a string, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"GPTConfig.{f.name} must be a positive number, got {value!r}")
            elif f.type is int and not isinstance(value, (int, np.integer)):  # 2.0 too: range(2.0) fails later
                raise ValueError(f"GPTConfig.{f.name} must be an integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = n_embd / n_head = {self.head_dim} must be even for rotary embeddings")
        if set(self.window_pattern.upper()) - set("SL"):
            raise ValueError(f"window_pattern must hold only S (short) and L (long), got {self.window_pattern!r}")
        if self.recipe not in ("classic", "2026"):
            raise ValueError(f"recipe must be 'classic' or '2026', got {self.recipe!r}")
        gate_channels = max(SMEAR_CHANNELS if self.smear else 0, VE_GATE_CHANNELS if self.value_embeds else 0)
        if self.n_embd < gate_channels:
            raise ValueError(f"smear and value embeddings gate on the first {gate_channels} channels: "
                             f"n_embd must be at least that, got {self.n_embd}")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self):
        return -(-self.vocab_size // self.pad_vocab_size_to) * self.pad_vocab_size_to

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)


SMEAR_CHANNELS = 24  # the smear gate reads the first 24 channels of the embedding
VE_GATE_CHANNELS = 12  # the value-embedding gate reads the first 12 channels of the block input


def norm(x, eps=None):
    # purely functional RMSNorm, no learnable parameters
    return F.rms_norm(x, eps=eps)


def has_ve(layer_idx, n_layer):
    """Value embeddings go on alternating layers, the last one always included."""
    return layer_idx % 2 == (n_layer - 1) % 2


def compute_window_sizes(config):
    """Each layer's attention window (keys before a query's own position; None = unlimited): the pattern
    tiled over the layers, L = sequence_len, S = a quarter of it rounded up to 128 (nanochat's FA3 tile),
    the last layer always L."""
    if not config.window_pattern:
        return [None] * config.n_layer
    long_window = config.sequence_len
    short_window = -(-long_window // 4 // 128) * 128  # ceil: 2048 -> 512, 1024 -> 256, 128 -> 128
    pattern = config.window_pattern.upper()
    windows = [short_window if pattern[i % len(pattern)] == "S" else long_window for i in range(config.n_layer)]
    windows[-1] = long_window
    return windows


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
        self.ve_gate = (nn.Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False)
                        if config.value_embeds and has_ve(layer_idx, config.n_layer) else None)
        # Q and K scaled by qk_scale after QK norm is the softmax scale times qk_scale², taken by the kernel
        self.scale = config.qk_scale ** 2 / math.sqrt(self.head_dim)

    def forward(self, x, cos_sin, kv_cache=None, ve=None, window=None):
        B, T, C = x.shape

        # project the input to queries, keys and values
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)

        # value residual (ResFormer): the value embedding mixed in through a per-head gate in (0, 3)
        if ve is not None:
            gate = 3 * self.ve_gate(x[..., :VE_GATE_CHANNELS]).sigmoid()  # (B, T, H_kv)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)

        # rotary embeddings on queries and keys give relative positions; then QK norm
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q, self.eps), norm(k, self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)

        # the KV cache appends this step's keys and values after the cached ones; the queries are the
        # last T positions, and each sees itself and the `window` keys before it (all for None)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        if kv_cache is not None and np.ndim(kv_cache.pos):
            # a cache of rows at their own positions (batched serving, engine.BatchKVCache): each query
            # sees its own row's keys up to itself
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_cache.attn_mask(q.shape[2], window),
                                               enable_gqa=self.n_head != self.n_kv_head, scale=self.scale)
        else:
            y = F.causal_attention(q, k, v, window=window, enable_gqa=self.n_head != self.n_kv_head, scale=self.scale)

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

    def forward(self, x, cos_sin, kv_cache=None, ve=None, window=None):
        x = x + self.attn(norm(x, self.eps), cos_sin, kv_cache, ve, window)
        x = x + self.mlp(norm(x, self.eps))
        return x


class GPT(nn.Module):
    def __init__(self, config, seed=0):
        self.config = config
        self.window_sizes = compute_window_sizes(config)
        V = config.padded_vocab_size  # logits past vocab_size are cropped in forward
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(V, config.n_embd),
            "h": nn.ModuleList([Block(config, layer_idx) for layer_idx in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, V, bias=False)
        if config.layer_lambdas:  # per layer: the residual stream scaled, the input embedding blended back in
            self.resid_lambdas = nn.Parameter(np.ones(config.n_layer, np.float32))
            self.x0_lambdas = nn.Parameter(np.zeros(config.n_layer, np.float32))
        if config.smear:  # the previous token's embedding mixed into each position (cheap bigram information)
            self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
            self.smear_lambda = nn.Parameter(np.zeros(1, np.float32))
        if config.backout:  # the mid-layer residual subtracted before the final norm
            self.backout_lambda = nn.Parameter(np.full(1, 0.2, np.float32))
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(V, kv_dim) for i in range(config.n_layer)
                                           if config.value_embeds and has_ve(i, config.n_layer)})
        # rotary tables for 10x the training length, so generation can run past it; plain arrays, not state
        self.rotary_seq_len = config.sequence_len * 10
        self.cos, self.sin = precompute_rotary_embeddings(self.rotary_seq_len, config.head_dim, config.rope_base)
        if not nn.init_skipped():  # under nn.skip_init() a loader fills in every weight
            self.init_weights(seed)

    def init_weights(self, seed=0):
        rng = np.random.default_rng(seed)
        for name, p in self.named_parameters():
            p.data[...] = self._initial_value(name, p.shape, rng)

    def _initial_value(self, name, shape, rng):
        cfg = self.config
        s = 3**0.5 * cfg.n_embd**-0.5  # uniform(-s, s) has the std of normal(0, 1/sqrt(n_embd))
        # the scalars and gates nanochat added come with its init, whatever the recipe
        if name == "resid_lambdas":  # stronger residual at early layers, weaker at deep ones
            return 1.15 - 0.10 * np.arange(cfg.n_layer) / max(cfg.n_layer - 1, 1)
        if name == "x0_lambdas":  # earlier layers blend in more of the input embedding
            return 0.20 - 0.15 * np.arange(cfg.n_layer) / max(cfg.n_layer - 1, 1)
        if name == "smear_lambda":
            return 0.0
        if name == "backout_lambda":
            return 0.2
        if name == "smear_gate.weight" or name.endswith("ve_gate.weight"):  # gates start slightly above neutral
            return rng.uniform(0.0, 0.02, shape)
        if name.startswith("value_embeds."):  # like c_v
            return rng.uniform(-s, s, shape)
        if name.endswith("c_proj.weight"):  # the residual branches start at zero
            return 0.0
        if cfg.recipe == "2026":
            if name == "transformer.wte.weight":
                return rng.normal(0.0, 0.8, shape)
            if name == "lm_head.weight":
                return rng.normal(0.0, 0.001, shape)
            return rng.uniform(-s, s, shape) * (0.4 if name.endswith("c_fc.weight") else 1.0)  # uniform: no outliers
        if name == "transformer.wte.weight":
            return rng.standard_normal(shape)
        if name == "lm_head.weight":  # the classifier starts at zero
            return 0.0
        fan_out, fan_in = shape  # https://arxiv.org/pdf/2310.17813
        return rng.normal(0.0, 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in)), shape)

    def estimate_flops(self):
        """Estimated FLOPs per token (forward + backward), as nanochat counts them: 6 per weight that
        multiplies the token stream (not the embedding lookups or the scalars), plus attention over
        min(window, sequence_len) keys per layer. Ref: https://arxiv.org/abs/2204.02311"""
        matmul_params = sum(p.numel() for name, p in self.named_parameters()
                            if p.ndim == 2 and not name.startswith(("transformer.wte.", "value_embeds.")))
        h, q, t = self.config.n_head, self.config.head_dim, self.config.sequence_len
        attn_flops = sum(12 * h * q * (t if w is None else min(w, t)) for w in self.window_sizes)
        return 6 * matmul_params + attn_flops

    def setup_optimizers(self, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0,
                         scalar_lr=0.5):
        """nanochat's split: AdamW for the embeddings, lm_head and scalars, Muon for the matrices in the
        blocks. The classic recipe shares one beta pair and weight decay; the 2026 one (and every group
        the new options add) takes nanochat's per-group values."""
        # AdamW learning rates scale as 1/sqrt(d_model), having been tuned at d_model = 768
        dmodel_lr_scale = (self.config.n_embd / 768) ** -0.5
        if self.config.recipe == "classic":
            head = embedding = dict(betas=(0.8, 0.95), weight_decay=weight_decay)
        else:
            head, embedding = dict(betas=(0.8, 0.96), weight_decay=0.01), dict(betas=(0.8, 0.995), weight_decay=0.001)
        adamw_groups = [
            dict(params=self.lm_head.parameters(), lr=unembedding_lr * dmodel_lr_scale, **head),
            dict(params=self.transformer["wte"].parameters(), lr=embedding_lr * dmodel_lr_scale, **embedding),
            dict(params=self.value_embeds.parameters(), lr=embedding_lr * dmodel_lr_scale * 0.5, betas=(0.8, 0.995),
                 weight_decay=0.01),
            dict(params=self._own(["resid_lambdas"]), lr=scalar_lr * 0.01, betas=(0.8, 0.95), weight_decay=0.05),
            dict(params=self._own(["x0_lambdas"]), lr=scalar_lr, betas=(0.96, 0.95), weight_decay=0.0),
            dict(params=self._own(["smear_gate.weight", "smear_lambda", "backout_lambda"]), lr=0.2, betas=(0.8, 0.95),
                 weight_decay=0.0),
        ]
        adamw = AdamW([g for g in adamw_groups if g["params"]], eps=1e-10)
        muon = Muon(self.transformer["h"].parameters(), lr=matrix_lr, momentum=0.95)
        optimizers = [adamw, muon]
        for opt in optimizers:
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        return optimizers

    def _own(self, names):
        """The parameters of these names that this model has (the options decide which exist)."""
        params = dict(self.named_parameters())
        return [params[n] for n in names if n in params]

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

        # embed the tokens
        x = self.transformer["wte"](idx)  # (B, T) -> (B, T, C)
        x = norm(x, self.config.norm_eps)
        if self.config.smear:
            x = self.smear(x, kv_cache)

        # the trunk of the transformer
        x0 = x  # the normalised embedding, blended back in at every layer by x0_lambdas
        backout_layer = self.config.n_layer // 2 if self.config.backout else None  # the residual cached halfway
        x_backout = None
        for i, block in enumerate(self.transformer["h"]):
            if self.config.layer_lambdas:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None  # (B, T, H_kv * D)
            x = block(x, cos_sin, kv_cache, ve, self.window_sizes[i])
            if i == backout_layer:
                x_backout = x
        if x_backout is not None:  # remove the low-level features of the mid-layer residual
            x = x - self.backout_lambda * x_backout
        x = norm(x, self.config.norm_eps)
        if kv_cache is not None:
            kv_cache.advance(T)

        # the lm_head, then the logit softcap
        softcap = self.config.softcap
        logits = self.lm_head(x)  # (B, T, C) -> (B, T, padded V)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., :self.config.vocab_size]  # crop the padding: (B, T, V)
        if targets is None:
            return softcap * (logits / softcap).tanh()
        targets = _token_array(targets, "targets", self.config.vocab_size, allow_ignore=True)
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {targets.shape} differs from idx shape {idx.shape}")
        # training: the softcap softcap * tanh(logits / softcap) is fused into the loss kernel
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction, softcap=softcap)

    def smear(self, x, kv_cache):
        """(B, T, C): each position takes in its predecessor's embedding through a gate. The first
        position's predecessor is the last token of the cache's previous forward, else nothing."""
        B, T, C = x.shape
        first = None if kv_cache is None else kv_cache.prev_embedding  # (B, 1, C) or None
        if kv_cache is not None:
            kv_cache.prev_embedding = x.data[:, -1:]
        prev = Tensor(np.zeros((B, 1, C), x.dtype) if first is None else first)
        if T > 1:
            prev = cat([prev, x[:, :-1]], dim=1)  # (B, T, C)
        gate = self.smear_lambda * self.smear_gate(x[..., :SMEAR_CHANNELS]).sigmoid()  # (B, T, 1)
        return x + gate * prev


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
