"""Fused scaled-dot-product attention, forward and backward, one (batch, head) pair per iteration.

Layout: q (B, Tq, H, D), k and v (B, Tk, Hk, D), out (B, Tq, H, D): the layout the projections
produce before the heads are transposed, so the attention of a model needs no copies. Query head
h reads key/value head h // (H / Hk) (grouped-query attention). Query i attends to keys
j <= i + offset: offset 0 is PyTorch's top-left causal mask, offset >= Tk no mask at all.

Why not NumPy: the scores of a head are a small GEMM (T x D x T), and a batch of them through
OpenBLAS synchronises its threads once per matrix. On 2 busy cores that measured 40x slower than
torch (each sync waits for a time slice). Here each thread owns whole heads, skips the masked
half of the causal scores, and the mask, scale and softmax happen in the same sweep. The forward
keeps the probabilities P (B, H, Tq, Tk) for backward (as PyTorch's CPU math path does).
"""
import numpy as np
from numba import njit, prange

from .softmax import check_float, vexp

PARALLEL_MIN_WORK = 1 << 17  # Tq * Tk * D * heads below which a prange launch costs more than it saves


def attention_forward_reference(q, k, v, scale, offset):
    """(out (B, Tq, H, D), probabilities (B, H, Tq, Tk)) by NumPy composites."""
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    qh = q.transpose(0, 2, 1, 3)
    kh = np.repeat(k.transpose(0, 2, 1, 3), H // Hk, axis=1)
    vh = np.repeat(v.transpose(0, 2, 1, 3), H // Hk, axis=1)
    scores = (qh @ kh.swapaxes(-1, -2)) * q.dtype.type(scale)
    visible = np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + offset
    scores = np.where(visible, scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3), p


def attention_backward_reference(q, k, v, out, p, grad, scale):
    """(dq, dk, dv) in the layouts of q, k and v, given out and P from the forward."""
    B, Tq, H, D = q.shape
    Hk = k.shape[2]
    qh, gh = q.transpose(0, 2, 1, 3), grad.transpose(0, 2, 1, 3)
    kh = np.repeat(k.transpose(0, 2, 1, 3), H // Hk, axis=1)
    vh = np.repeat(v.transpose(0, 2, 1, 3), H // Hk, axis=1)
    dv = p.swapaxes(-1, -2) @ gh
    dp = gh @ vh.swapaxes(-1, -2)
    ds = p * (dp - (grad * out).sum(-1).transpose(0, 2, 1)[..., None]) * q.dtype.type(scale)
    dq = ds @ kh
    dk = ds.swapaxes(-1, -2) @ qh
    group = lambda x: x.reshape(B, Hk, H // Hk, *x.shape[2:]).sum(2).transpose(0, 2, 1, 3)  # noqa: E731
    return dq.transpose(0, 2, 1, 3), group(dk), group(dv)


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot(x, y):
    s = x.dtype.type(0.0)
    for d in range(x.shape[0]):
        s += x[d] * y[d]
    return s


@njit(cache=True, fastmath={"reassoc", "contract"})
def _axpy(a, x, y):
    for d in range(x.shape[0]):
        y[d] += a * x[d]


@njit(cache=True)
def _forward_head(q, k, v, scale, offset, p, out, bh):
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    b, h = bh // H, bh % H
    hk = h // (H // Hk)
    for i in range(Tq):
        n = min(Tk, i + offset + 1)
        row = p[b, h, i]
        qi = q[b, i, h]
        m = row.dtype.type(-np.inf)
        for j in range(n):
            s = _dot(qi, k[b, j, hk]) * scale
            row[j] = s
            m = s if s > m else m
        total = 0.0
        for j in range(n):
            e = vexp(row[j] - m)
            row[j] = e
            total += e
        inv = row.dtype.type(1.0 / total)
        oi = out[b, i, h]
        oi[:] = 0
        for j in range(n):
            row[j] *= inv
            _axpy(row[j], v[b, j, hk], oi)
        row[n:] = 0


@njit(cache=True)
def _backward_head(q, k, v, out, p, grad, scale, dq, dk, dv, bh):
    # dk, dv are (B, Tk, H, D): one slot per query head, summed over each kv group by the caller
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    b, h = bh // H, bh % H
    hk = h // (H // Hk)
    for i in range(Tq):
        row = p[b, h, i]
        gi, qi, dqi = grad[b, i, h], q[b, i, h], dq[b, i, h]
        delta = _dot(gi, out[b, i, h])
        for j in range(Tk):
            pj = row[j]
            if pj == 0:  # masked (or underflowed): contributes nothing anywhere
                continue
            ds = pj * (_dot(gi, v[b, j, hk]) - delta) * scale
            _axpy(ds, k[b, j, hk], dqi)
            _axpy(ds, qi, dk[b, j, h])
            _axpy(pj, gi, dv[b, j, h])


@njit(cache=True)
def _forward_serial(q, k, v, scale, offset, p, out):
    for bh in range(q.shape[0] * q.shape[2]):
        _forward_head(q, k, v, scale, offset, p, out, bh)


@njit(cache=True, parallel=True)
def _forward_parallel(q, k, v, scale, offset, p, out):
    for bh in prange(q.shape[0] * q.shape[2]):
        _forward_head(q, k, v, scale, offset, p, out, bh)


@njit(cache=True)
def _backward_serial(q, k, v, out, p, grad, scale, dq, dk, dv):
    for bh in range(q.shape[0] * q.shape[2]):
        _backward_head(q, k, v, out, p, grad, scale, dq, dk, dv, bh)


@njit(cache=True, parallel=True)
def _backward_parallel(q, k, v, out, p, grad, scale, dq, dk, dv):
    for bh in prange(q.shape[0] * q.shape[2]):
        _backward_head(q, k, v, out, p, grad, scale, dq, dk, dv, bh)


def _check(q, k, v):
    for x in (q, k, v):
        check_float(x)
        if x.ndim != 4 or x.dtype != q.dtype:
            raise ValueError(f"attention needs 4-D q, k, v of one dtype, got {q.shape} {k.shape} {v.shape}")
    B, Tq, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D or H % k.shape[2]:
        raise ValueError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}")


def _parallel(q, k):
    import numba
    work = q.shape[0] * q.shape[2] * q.shape[1] * k.shape[1] * q.shape[3]
    return work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1


def attention_forward(q, k, v, scale, offset):
    """Numba twin of attention_forward_reference."""
    _check(q, k, v)
    q, k, v = (np.ascontiguousarray(x) for x in (q, k, v))
    B, Tq, H, D = q.shape
    out = np.empty_like(q)
    p = np.empty((B, H, Tq, k.shape[1]), q.dtype)
    kernel = _forward_parallel if _parallel(q, k) else _forward_serial
    kernel(q, k, v, q.dtype.type(scale), np.int64(offset), p, out)
    return out, p


def attention_backward(q, k, v, out, p, grad, scale):
    """Numba twin of attention_backward_reference."""
    _check(q, k, v)
    q, k, v, out, p, grad = (np.ascontiguousarray(x) for x in (q, k, v, out, p, grad))
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    dq = np.zeros_like(q)
    dk = np.zeros((B, Tk, H, D), q.dtype)
    dv = np.zeros((B, Tk, H, D), q.dtype)
    kernel = _backward_parallel if _parallel(q, k) else _backward_serial
    kernel(q, k, v, out, p, grad, q.dtype.type(scale), dq, dk, dv)
    if Hk != H:
        dk = dk.reshape(B, Tk, Hk, H // Hk, D).sum(3)
        dv = dv.reshape(B, Tk, Hk, H // Hk, D).sum(3)
    return dq, dk, dv
