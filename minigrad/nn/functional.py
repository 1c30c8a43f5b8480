"""Stateless layers with PyTorch's names and semantics (differences are noted where they exist)."""
import numpy as np

from minigrad import ops
from minigrad._creation import default_generator
from minigrad._tensor import Tensor, where


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


def cross_entropy(logits, targets, ignore_index=-1, reduction="mean", softcap=None, *, weight=None,
                  label_smoothing=0.0):
    """Cross-entropy of logits (N, C) or (N, C, d1, ...) against class indices (N, d1, ...) or class
    probabilities (logits' shape), with PyTorch's weight and label_smoothing.

    ignore_index defaults to -1 (nanochat's convention), not PyTorch's -100. softcap (a minigrad
    extension) takes the loss of softcap * tanh(logits / softcap). Index targets into (N, C) logits
    without weight or smoothing take one fused kernel."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if isinstance(targets, Tensor) and targets.dtype.kind == "f":
        return _cross_entropy_probabilities(logits, targets, reduction, softcap, weight, label_smoothing)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.ndim < 1 or targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"cross_entropy needs logits (N, C, ...) and targets (N, ...), "
                           f"got {logits.shape} and {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must be integer class indices, got {targets.dtype}")
    if logits.ndim == 2 and weight is None and not label_smoothing:
        return ops.CrossEntropy.apply(logits, targets=targets.astype(np.int64, copy=False),
                                      ignore_index=ignore_index, reduction=reduction, softcap=softcap)
    log_p = _capped(logits, softcap).log_softmax(1)
    loss = nll_loss(log_p, targets, weight, ignore_index, reduction)
    if not label_smoothing:
        return loss
    # smoothing mixes in the loss against the uniform distribution, -mean over classes of w_c log p_c,
    # averaged as the main loss is (the mean divides by the kept targets' weights)
    kept = targets != ignore_index
    w = np.ones(logits.shape[1]) if weight is None else np.asarray(getattr(weight, "data", weight))
    class_weight = Tensor(w.astype(logits.dtype).reshape((-1,) + (1,) * (logits.ndim - 2)))
    uniform = -(log_p * class_weight).sum(1) / logits.shape[1] * Tensor(kept.astype(logits.dtype))
    if reduction == "mean":
        uniform = uniform.sum() / float(np.where(kept, w[np.where(kept, targets, 0)], 0).sum())
    elif reduction == "sum":
        uniform = uniform.sum()
    return loss * (1 - label_smoothing) + uniform * label_smoothing


def _capped(logits, softcap):
    return logits if softcap is None else (logits / softcap).tanh() * softcap


def _cross_entropy_probabilities(logits, targets, reduction, softcap, weight, label_smoothing):
    if targets.shape != logits.shape:
        raise RuntimeError(f"probability targets need the logits' shape {logits.shape}, got {targets.shape}")
    classes = logits.shape[1]
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / classes
    log_p = _capped(logits, softcap).log_softmax(1)
    if weight is not None:
        log_p = log_p * weight.reshape((-1,) + (1,) * (logits.ndim - 2))
    loss = -(targets * log_p).sum(1)
    return _reduce(loss, reduction)


def _reduce(loss, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def nll_loss(log_probs, targets, weight=None, ignore_index=-100, reduction="mean"):
    """-log_probs[n, target[n], ...], weighted per class; the mean divides by the kept targets' weight."""
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.shape != log_probs.shape[:1] + log_probs.shape[2:]:
        raise RuntimeError(f"nll_loss needs input (N, C, ...) and target (N, ...), got {log_probs.shape} "
                           f"and {targets.shape}")
    kept = targets != ignore_index
    safe = np.where(kept, targets, 0)
    if safe.size and (safe.min() < 0 or safe.max() >= log_probs.shape[1]):
        raise IndexError(f"target {safe.min() if safe.min() < 0 else safe.max()} is out of range for "
                         f"{log_probs.shape[1]} classes")
    w = np.ones(log_probs.shape[1], log_probs.dtype) if weight is None else np.asarray(
        weight.data if isinstance(weight, Tensor) else weight, log_probs.dtype)
    row_weight = Tensor(np.where(kept, w[safe], 0).astype(log_probs.dtype))
    picked = log_probs.gather(1, np.expand_dims(safe, 1)).squeeze(1)
    loss = -picked * row_weight
    if reduction == "mean":
        return loss.sum() / row_weight.sum()
    return _reduce(loss, reduction)


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each index; num_classes -1 means max + 1."""
    idx = np.asarray(tensor.data if isinstance(tensor, Tensor) else tensor)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"one_hot needs integer indices, got {idx.dtype}")
    num_classes = int(idx.max()) + 1 if num_classes == -1 else num_classes
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise RuntimeError(f"one_hot: class values must be in [0, {num_classes})")
    return Tensor((idx[..., None] == np.arange(num_classes)).astype(np.int64))


def pad(x, pad, mode="constant", value=0.0):
    """PyTorch's F.pad: pad = (last dim's before, after, the one before's before, after, ...);
    modes constant, reflect, replicate, circular. Negative widths crop."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise RuntimeError(f"pad needs pairs for at most {x.ndim} dims, got {pad}")
    widths = [(0, 0)] * (x.ndim - len(pad) // 2) + [(pad[i], pad[i + 1]) for i in range(len(pad) - 2, -1, -2)]
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
    x = x[crop] if any(lo < 0 or hi < 0 for lo, hi in widths) else x
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    if mode == "constant":
        return ops.Pad.apply(x, widths=tuple(widths), value=value)
    numpy_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}.get(mode)
    if numpy_mode is None:
        raise ValueError(f"pad mode must be constant, reflect, replicate or circular, got {mode!r}")
    for axis, (lo, hi) in enumerate(widths):  # gather each padded dim's source positions
        if lo or hi:
            positions = np.pad(np.arange(x.shape[axis]), (lo, hi), mode=numpy_mode)
            x = x[(slice(None),) * axis + (positions,)]
    return x


# ---- activations -------------------------------------------------------------------------------
def silu(x): return x.silu()
def leaky_relu(x, negative_slope=0.01): return where(x.data >= 0, x, x * negative_slope)
def elu(x, alpha=1.0): return where(x.data > 0, x, (x.clamp(max=0).exp() - 1) * alpha)
def celu(x, alpha=1.0): return where(x.data > 0, x, ((x.clamp(max=0) / alpha).exp() - 1) * alpha)
def selu(x): return elu(x, 1.6732632423543772) * 1.0507009873554805
def relu6(x): return hardtanh(x, 0.0, 6.0)
def hardtanh(x, min_val=-1.0, max_val=1.0): return x.clamp(min_val, max_val)
def hardsigmoid(x): return (x / 6 + 0.5).clamp(0.0, 1.0)
def hardswish(x): return x * hardsigmoid(x)
def softsign(x): return x / (x.abs() + 1)
def logsigmoid(x): return -softplus(-x)
def mish(x): return x * softplus(x).tanh()
def sigmoid(x): return x.sigmoid()
def tanh(x): return x.tanh()


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, computed as max(z, 0) + log1p(exp(-|z|)) so it cannot overflow;
    linear above threshold, as PyTorch."""
    z = x * beta
    smooth = (z.relu() + ((-z.abs()).exp() + 1).log()) / beta
    return where(z.data > threshold, x, smooth)


def gelu(x, approximate="none"):
    if approximate == "tanh":
        return x * 0.5 * (((x + x * x * x * 0.044715) * float(np.sqrt(2 / np.pi))).tanh() + 1)
    if approximate != "none":
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return x * 0.5 * ((x * float(1 / np.sqrt(2))).erf() + 1)


# ---- losses ------------------------------------------------------------------------------------
def mse_loss(input, target, reduction="mean"): return _reduce((input - target).square(), reduction)
def l1_loss(input, target, reduction="mean"): return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-(t log p + (1 - t) log(1 - p)), each log clamped at -100 as PyTorch does."""
    loss = -(target * input.log().clamp(min=-100) + (1 - target) * (1 - input).log().clamp(min=-100))
    return _reduce(loss * weight if weight is not None else loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """(1 - t) x + (1 + (pw - 1) t) softplus(-x): stable for any logit."""
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + log_weight * softplus(-input)
    return _reduce(loss * weight if weight is not None else loss, reduction)


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
    if isinstance(attn_mask, Tensor) and attn_mask.dtype != np.bool_:
        scores = scores + attn_mask.to(scores.dtype)  # an additive mask keeps its graph: it gets a gradient
    elif attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        scores = where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + Tensor(mask.astype(scores.dtype))
    hidden = np.all(scores.data == -np.inf, axis=-1, keepdims=True)
    if hidden.any():  # a query that may see no key attends to nothing (zeros), as PyTorch's safe softmax
        return where(hidden, 0.0, where(hidden, 0.0, scores).softmax(-1)) @ v  # no NaN, forward or backward
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


# convolution, pooling, resampling and normalisation live in conv.py; PyTorch's F names them all
from minigrad.nn.conv import (avg_pool2d, batch_norm, conv1d, conv2d, conv_transpose2d, group_norm,  # noqa: E402
                              interpolate, layer_norm, max_pool2d)
