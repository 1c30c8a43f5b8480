"""The same GPT in PyTorch, as Karpathy's nanochat gpt.py writes it (float32 throughout): the
classic model, and each GPTConfig option transcribed from karpathy/nanochat 92d63d4's gpt.py and
the SDPA fallback of its flash_attention.py.

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


def has_ve(layer_idx, n_layer):
    return layer_idx % 2 == (n_layer - 1) % 2


def apply_rotary_emb(x, cos, sin):
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3)


def sdpa_attention(q, k, v, window_size, enable_gqa):
    """nanochat's flash_attention._sdpa_attention: q, k, v (B, H, T, D), window_size (left, right)."""
    Tq, Tk = q.size(2), k.size(2)
    window = window_size[0]
    if (window < 0 or window >= Tq) and Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
    if Tq == 1:
        if 0 <= window < Tk:
            start = max(0, Tk - (window + 1))
            k, v = k[:, :, start:, :], v[:, :, start:, :]
        return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=enable_gqa)
    row_idx = (Tk - Tq) + torch.arange(Tq).unsqueeze(1)
    col_idx = torch.arange(Tk).unsqueeze(0)
    mask = col_idx <= row_idx
    if 0 <= window < Tk:
        mask = mask & ((row_idx - col_idx) <= window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.config = config
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.eps = config.norm_eps
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate_channels = 12
        self.ve_gate = (nn.Linear(self.ve_gate_channels, self.n_kv_head, bias=False)
                        if config.value_embeds and has_ve(layer_idx, config.n_layer) else None)

    def forward(self, x, ve, cos_sin, window_size, kv_cache=None):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            ve = ve.view(B, T, self.n_kv_head, self.head_dim)
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :self.ve_gate_channels]))
            v = v + gate.unsqueeze(-1) * ve
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q, self.eps), norm(k, self.eps)
        q = q * self.config.qk_scale
        k = k * self.config.qk_scale
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        y = sdpa_attention(q, k, v, window_size, enable_gqa=self.n_head != self.n_kv_head)
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

    def forward(self, x, ve, cos_sin, window_size, kv_cache=None):
        x = x + self.attn(norm(x, self.eps), ve, cos_sin, window_size, kv_cache)
        return x + self.mlp(norm(x, self.eps))


class TorchGPT(nn.Module):
    """nanochat's GPT; each GPTConfig option switches on its part of nanochat 92d63d4's code."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.window_sizes = self._compute_window_sizes(config)
        p = config.pad_vocab_size_to
        padded_vocab_size = ((config.vocab_size + p - 1) // p) * p
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(padded_vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, padded_vocab_size, bias=False)
        if config.layer_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        if config.smear:
            self.smear_gate = nn.Linear(24, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if config.backout:
            self.backout_lambda = nn.Parameter(0.2 * torch.ones(1))
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(padded_vocab_size, kv_dim)
                                           for i in range(config.n_layer)
                                           if config.value_embeds and has_ve(i, config.n_layer)})
        cos, sin = precompute_rotary_embeddings(config.sequence_len * 10, config.head_dim, config.rope_base)
        self.register_buffer("cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("sin", torch.from_numpy(sin), persistent=False)

    @staticmethod
    def _compute_window_sizes(config):
        if not config.window_pattern:  # the classic model: full context, however long
            return [(-1, 0)] * config.n_layer
        pattern = config.window_pattern.upper()
        long_window = config.sequence_len
        short_window = -(-long_window // 4 // 128) * 128
        char_to_window = {"L": (long_window, 0), "S": (short_window, 0)}
        window_sizes = [char_to_window[pattern[i % len(pattern)]] for i in range(config.n_layer)]
        window_sizes[-1] = (long_window, 0)
        return window_sizes

    @torch.no_grad()
    def init_weights(self):
        """nanochat 92d63d4's init_weights (the 2026 recipe)."""
        torch.nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=0.8)
        torch.nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        n_embd = self.config.n_embd
        s = 3**0.5 * n_embd**-0.5
        for block in self.transformer.h:
            torch.nn.init.uniform_(block.attn.c_q.weight, -s, s)
            torch.nn.init.uniform_(block.attn.c_k.weight, -s, s)
            torch.nn.init.uniform_(block.attn.c_v.weight, -s, s)
            torch.nn.init.zeros_(block.attn.c_proj.weight)
            torch.nn.init.uniform_(block.mlp.c_fc.weight, -s * 0.4, s * 0.4)
            torch.nn.init.zeros_(block.mlp.c_proj.weight)
        n_layer = self.config.n_layer
        for i in range(n_layer):
            self.resid_lambdas.data[i] = 1.15 - (0.10 * i / max(n_layer - 1, 1))
        for i in range(n_layer):
            self.x0_lambdas.data[i] = 0.20 - (0.15 * i / max(n_layer - 1, 1))
        torch.nn.init.zeros_(self.smear_lambda)
        torch.nn.init.constant_(self.backout_lambda, 0.2)
        torch.nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        for ve in self.value_embeds.values():
            torch.nn.init.uniform_(ve.weight, -s, s)
        for block in self.transformer.h:
            if block.attn.ve_gate is not None:
                torch.nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)

    def optimizer_groups(self, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0,
                         scalar_lr=0.5):
        """nanochat 92d63d4's setup_optimizer param_groups (the 2026 recipe), before MuonAdamW takes them."""
        matrix_params = list(self.transformer.h.parameters())
        value_embeds_params = list(self.value_embeds.parameters())
        embedding_params = list(self.transformer.wte.parameters())
        lm_head_params = list(self.lm_head.parameters())
        resid_params = [self.resid_lambdas]
        x0_params = [self.x0_lambdas]
        smear_params = [self.smear_gate.weight, self.smear_lambda, self.backout_lambda]
        dmodel_lr_scale = (self.config.n_embd / 768) ** -0.5
        param_groups = [
            dict(kind='adamw', params=lm_head_params, lr=unembedding_lr * dmodel_lr_scale, betas=(0.8, 0.96), eps=1e-10, weight_decay=0.01),
            dict(kind='adamw', params=embedding_params, lr=embedding_lr * dmodel_lr_scale, betas=(0.8, 0.995), eps=1e-10, weight_decay=0.001),
            dict(kind='adamw', params=value_embeds_params, lr=embedding_lr * dmodel_lr_scale * 0.5, betas=(0.8, 0.995), eps=1e-10, weight_decay=0.01),
            dict(kind='adamw', params=resid_params, lr=scalar_lr * 0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.05),
            dict(kind='adamw', params=x0_params, lr=scalar_lr, betas=(0.96, 0.95), eps=1e-10, weight_decay=0.0),
            dict(kind='adamw', params=smear_params, lr=0.2, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0),
        ]
        for shape in sorted({p.shape for p in matrix_params}):
            group_params = [p for p in matrix_params if p.shape == shape]
            param_groups.append(dict(kind='muon', params=group_params, lr=matrix_lr, momentum=0.95, ns_steps=5,
                                     beta2=0.9, weight_decay=weight_decay))
        return param_groups

    def forward(self, idx, targets=None, loss_reduction="mean", kv_cache=None):
        B, T = idx.size()
        T0 = 0 if kv_cache is None else kv_cache.pos
        cos_sin = self.cos[:, T0:T0 + T], self.sin[:, T0:T0 + T]
        eps = self.config.norm_eps
        x = norm(self.transformer.wte(idx), eps)
        if self.config.smear:
            x = self.smear(x, kv_cache)
        x0 = x
        backout_layer = self.config.n_layer // 2
        x_backout = None
        for i, block in enumerate(self.transformer.h):
            if self.config.layer_lambdas:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos_sin, self.window_sizes[i], kv_cache)
            if i == backout_layer:
                x_backout = x
        if self.config.backout:
            x = x - self.backout_lambda * x_backout
        x = norm(x, eps)
        if kv_cache is not None:
            kv_cache.pos += T
        softcap = self.config.softcap
        logits = self.lm_head(x)[..., :self.config.vocab_size]
        logits = softcap * torch.tanh(logits / softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                               reduction=loss_reduction)

    def smear(self, x, kv_cache):
        """nanochat's smear. Like nanochat, a chunk of T > 1 on a non-empty cache does not smear its
        first position (nanochat only ever prefills an empty cache); the minigrad GPT does."""
        T = x.size(1)
        if kv_cache is None:
            gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :24]))
            return torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        x_pre_smear = kv_cache.prev_embedding
        kv_cache.prev_embedding = x[:, -1:, :]
        if T > 1:
            gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :24]))
            x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        elif x_pre_smear is not None:
            gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, :, :24]))
            x = x + gate * x_pre_smear
        return x


class TorchKVCache:
    """nanochat's KV cache, preallocated for max_len positions: (n_layer, 2, B, H_kv, max_len, D)."""

    def __init__(self, batch_size, n_kv_head, head_dim, n_layer, max_len):
        self.kv = torch.zeros(n_layer, 2, batch_size, n_kv_head, max_len, head_dim)
        self.pos = 0
        self.prev_embedding = None  # smear's previous token embedding (B, 1, C)

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
