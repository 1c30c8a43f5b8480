"""The same GPT in PyTorch, as Karpathy's nanochat gpt.py writes it (float32 throughout).

It is the reference the parity tests and benchmarks compare against, and the way a minigrad
checkpoint continues on PyTorch: its state_dict names and layouts are those of nanochat, so
`load_torch_gpt(path, config)` loads a minigrad `model_*.safetensors` with strict=True.
Needs torch (`pip install torch`); importing this module without it raises ImportError.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanochat.gpt import GPTConfig, precompute_rotary_embeddings


def norm(x, eps=None):
    return F.rms_norm(x, (x.size(-1),), eps=eps)


def apply_rotary_emb(x, cos, sin):
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.eps = config.norm_eps
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos_sin, kv_cache=None):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q, self.eps), norm(k, self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tq, Tk = q.size(2), k.size(2)
        enable_gqa = self.n_head != self.n_kv_head
        if Tq == Tk:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
        else:  # queries on top of a cache: the whole prefix, then causal within the chunk
            attn_mask = torch.ones((Tq, Tk), dtype=torch.bool)
            attn_mask[:, Tk - Tq:] = torch.tril(torch.ones((Tq, Tq), dtype=torch.bool))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=enable_gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)
        self.eps = config.norm_eps

    def forward(self, x, cos_sin, kv_cache=None):
        x = x + self.attn(norm(x, self.eps), cos_sin, kv_cache)
        return x + self.mlp(norm(x, self.eps))


class TorchGPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        cos, sin = precompute_rotary_embeddings(config.sequence_len * 10, config.head_dim, config.rope_base)
        self.register_buffer("cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("sin", torch.from_numpy(sin), persistent=False)

    def forward(self, idx, targets=None, loss_reduction="mean", kv_cache=None):
        B, T = idx.size()
        T0 = 0 if kv_cache is None else kv_cache.pos
        cos_sin = self.cos[:, T0:T0 + T], self.sin[:, T0:T0 + T]
        eps = self.config.norm_eps
        x = norm(self.transformer.wte(idx), eps)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache)
        x = norm(x, eps)
        if kv_cache is not None:
            kv_cache.pos += T
        softcap = self.config.softcap
        logits = softcap * torch.tanh(self.lm_head(x) / softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                               reduction=loss_reduction)


class TorchKVCache:
    """nanochat's KV cache, preallocated for max_len positions: (n_layer, 2, B, H_kv, max_len, D)."""

    def __init__(self, batch_size, n_kv_head, head_dim, n_layer, max_len):
        self.kv = torch.zeros(n_layer, 2, batch_size, n_kv_head, max_len, head_dim)
        self.pos = 0

    def insert_kv(self, layer_idx, k, v):
        t0, t1 = self.pos, self.pos + k.size(2)
        self.kv[layer_idx, 0, :, :, t0:t1] = k
        self.kv[layer_idx, 1, :, :, t0:t1] = v
        return self.kv[layer_idx, 0, :, :, :t1], self.kv[layer_idx, 1, :, :, :t1]


def load_torch_gpt(model_path, config):
    """A TorchGPT holding the weights of a minigrad checkpoint's model file (strict load)."""
    from safetensors.torch import load_file
    config = config if isinstance(config, GPTConfig) else GPTConfig.from_dict(config)
    model = TorchGPT(config)
    model.load_state_dict(load_file(str(model_path)), strict=True)
    return model
