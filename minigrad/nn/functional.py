"""Stateless layers with PyTorch's names and semantics (differences are noted where they exist)."""
import numpy as np

from minigrad import ops
from minigrad.creation import default_generator
from minigrad.tensor import Tensor, where


def linear(x, weight, bias=None):
    """x (..., in) @ weight (out, in).T + bias (out,) -> (..., out); weight in PyTorch's layout."""
    if x.ndim >= 2 and weight.ndim == 2 and x.dtype == weight.dtype and x.shape[-1] == weight.shape[1]:
        out = ops.Linear.apply(x, weight)  # one node: no transposed-weight view in the graph
    else:
        out = x @ weight.T
    return out + bias if bias is not None else out


def embedding(idx, weight):
    idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"embedding indices must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        raise IndexError(f"embedding index out of range: indices span [{idx.min()}, {idx.max()}] "
                         f"but the table has {weight.shape[0]} rows")
    return weight[idx]


def rms_norm(x, normalized_shape=None, weight=None, eps=None):
    """RMSNorm over the last dimension. eps defaults to the dtype's machine epsilon, as F.rms_norm."""
    if normalized_shape is not None and tuple(np.atleast_1d(normalized_shape)) != x.shape[-1:]:
        raise ValueError(f"rms_norm normalizes the last dim only; normalized_shape {normalized_shape} "
                         f"does not match input shape {x.shape}")
    eps = float(np.finfo(x.dtype).eps) if eps is None else eps
    out = ops.RMSNorm.apply(x, eps=eps)
    return out * weight if weight is not None else out


def relu(x): return x.relu()
def relu_squared(x): return ops.ReluSquared.apply(x)  # relu(x).square() as one node


def rotary(x, cos, sin):
    """Rotary embedding over the last dim split in halves: (x1 cos + x2 sin, x2 cos - x1 sin), one node.
    cos and sin (..., D/2) broadcast against x's halves and get no gradient."""
    if x.shape[-1] % 2:
        raise ValueError(f"rotary needs an even last dim, got {x.shape}")
    return ops.Rotary.apply(x, cos, sin)
def softmax(x, dim=-1): return x.softmax(dim)
def log_softmax(x, dim=-1): return x.log_softmax(dim)


def cross_entropy(logits, targets, ignore_index=-1, reduction="mean", softcap=None):
    """Fused cross-entropy of logits (N, C) against class indices (N,).

    ignore_index defaults to -1 (nanochat's convention), not PyTorch's -100. softcap (a minigrad
    extension) takes the loss of softcap * tanh(logits / softcap), fused into the same kernel."""
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy needs logits (N, C) and targets (N,), got {logits.shape} and {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must be integer class indices, got {targets.dtype}")
    return ops.CrossEntropy.apply(logits, targets=targets.astype(np.int64, copy=False),
                                  ignore_index=ignore_index, reduction=reduction, softcap=softcap)


def dropout(x, p=0.5, training=True, generator=None):
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    keep = (generator or default_generator()).random(x.shape) >= p
    return x * Tensor((keep / (1 - p)).astype(x.dtype))


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False, scale=None):
    """softmax(q kᵀ · scale + mask) v for q (..., Hq, Tq, D), k and v (..., Hk, Tk, D).

    attn_mask: boolean (True = may attend) or additive float, broadcastable to (..., Hq, Tq, Tk).
    is_causal aligns the mask top-left, as PyTorch does (query i sees keys 0..i)."""
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal, not both")
    # heads are dim -3 when there is one; a single key/value head broadcasts over the query heads, as in PyTorch
    hq, hk = (q.shape[-3], k.shape[-3]) if min(q.ndim, k.ndim) >= 3 else (1, 1)
    if hq != hk and hk != 1:
        if not enable_gqa or hq % hk:
            raise ValueError(f"{hq} query heads and {hk} key/value heads need enable_gqa=True "
                             "and a head count divisible by the key/value head count")
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    if attn_mask is None and _fusable(q, k, v):
        # one fused node (grouped heads included): no scores, mask or repeated heads as separate arrays
        return ops.ScaledDotProductAttention.apply(q, k, v, scale=float(scale), offset=0 if is_causal else tk)
    if hq != hk and hk != 1:
        k, v = _repeat_heads(k, hq // hk), _repeat_heads(v, hq // hk)
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Hq, Tq, Tk)
    if is_causal:
        attn_mask = np.tril(np.ones((tq, tk), dtype=bool))
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        scores = where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + Tensor(mask.astype(scores.dtype))
    return scores.softmax(-1) @ v


def causal_attention(q, k, v, window=None, enable_gqa=False, scale=None):
    """Causal attention of queries q (B, Hq, Tq, D) that are the last Tq of the Tk key positions in
    k and v (B, Hk, Tk, D): flash-attention's bottom-right alignment, so training (Tq == Tk), a
    KV-cache decode step (Tq == 1) and a chunk on top of a cache are one call. With a window (a
    minigrad extension, flash-attention's window_size=(window, 0)) a query sees its own position and
    the `window` keys before it; the fused kernel never computes the keys left of that."""
    tq, tk = q.shape[-2], k.shape[-2]
    if tq > tk:
        raise ValueError(f"causal_attention needs at least as many keys as queries, got {tq} queries, {tk} keys")
    if window is not None and (not isinstance(window, (int, np.integer)) or window < 0):
        raise ValueError(f"window must be a non-negative integer or None, got {window!r}")
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    if _fusable(q, k, v) and (enable_gqa or q.shape[1] == k.shape[1]):
        return ops.ScaledDotProductAttention.apply(q, k, v, scale=float(scale), offset=tk - tq, window=window)
    last = np.arange(tq)[:, None] + (tk - tq)  # the last key each query sees
    keys = np.arange(tk)[None, :]
    mask = (keys <= last) & (keys >= last - (tk if window is None else window))
    return scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa, scale=scale)


def _fusable(q, k, v):
    """The fused kernel takes non-empty (B, H, T, D) float32/float64 operands of one dtype and batch, k and v alike."""
    return (q.ndim == k.ndim == v.ndim == 4 and q.dtype == k.dtype == v.dtype
            and q.dtype in (np.float32, np.float64) and k.shape == v.shape
            and q.shape[0] == k.shape[0] and q.shape[3] == k.shape[3] and q.shape[1] % k.shape[1] == 0
            and q.numel() > 0 and k.numel() > 0)


def _repeat_heads(x, n):
    """(..., Hk, T, D) -> (..., Hk*n, T, D), each kv head repeated for the n query heads it serves."""
    *lead, hk, t, d = x.shape
    return x.unsqueeze(-3).expand(*lead, hk, n, t, d).reshape(*lead, hk * n, t, d)
