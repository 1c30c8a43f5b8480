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
import importlib

import numpy as np
from numba import njit, prange

from .softmax import check_float, vexp

matmul_module = importlib.import_module(__package__ + ".matmul")  # its GEMM thread pool

PARALLEL_MIN_WORK = 1 << 20  # score elements below which a prange launch did not pay off (524k: 1993 vs 2025 us)


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


@njit(cache=True)
def _softmax_rows(s, scale, offset, bh):
    """In place on the scores s (BH, Tq, Tk) of one (batch, head) pair: scale, mask keys j > i + offset,
    softmax (masked entries become exact zeros)."""
    Tq, Tk = s.shape[1], s.shape[2]
    for i in range(Tq):
        row = s[bh, i]
        n = min(Tk, i + offset + 1)
        m = row.dtype.type(-np.inf)
        for j in range(n):
            row[j] *= scale
            m = row[j] if row[j] > m else m
        total = 0.0
        for j in range(n):
            e = vexp(row[j] - m)
            row[j] = e
            total += e
        inv = row.dtype.type(1.0 / total)
        for j in range(n):
            row[j] *= inv
        row[n:] = 0


@njit(cache=True)
def _softmax_backward_rows(p, dp, delta, scale, bh):
    """In place: dp <- p * (dp - delta) * scale, the gradient of the scaled scores of one pair."""
    for i in range(p.shape[1]):
        d = delta[bh, i]
        prow, drow = p[bh, i], dp[bh, i]
        for j in range(p.shape[2]):
            drow[j] = prow[j] * (drow[j] - d) * scale


@njit(cache=True)
def _softmax_serial(s, scale, offset):
    for bh in range(s.shape[0]):
        _softmax_rows(s, scale, offset, bh)


@njit(cache=True, parallel=True)
def _softmax_parallel(s, scale, offset):
    for bh in prange(s.shape[0]):
        _softmax_rows(s, scale, offset, bh)


@njit(cache=True)
def _softmax_backward_serial(p, dp, delta, scale):
    for bh in range(p.shape[0]):
        _softmax_backward_rows(p, dp, delta, scale, bh)


@njit(cache=True, parallel=True)
def _softmax_backward_parallel(p, dp, delta, scale):
    for bh in prange(p.shape[0]):
        _softmax_backward_rows(p, dp, delta, scale, bh)


def _check(q, k, v):
    for x in (q, k, v):
        check_float(x)
        if x.ndim != 4 or x.dtype != q.dtype:
            raise ValueError(f"attention needs 4-D q, k, v of one dtype, got {q.shape} {k.shape} {v.shape}")
    B, Tq, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D or H % k.shape[2]:
        raise ValueError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}")


def _parallel(n_elements):
    import numba
    return n_elements >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1


def _heads(x, hk):
    """(B, T, H, D) -> (B, Hk, H/Hk, T, D) view: the query heads grouped under their key/value head."""
    B, T, H, D = x.shape
    return x.reshape(B, T, hk, H // hk, D).transpose(0, 2, 3, 1, 4)


def _bmm(a, b):
    """Batched a @ b (broadcast batch dims), the batch split over the GEMM pool's single-threaded BLAS
    (np.matmul with multithreaded OpenBLAS synchronises once per small matrix)."""
    if a.shape[:-2] == b.shape[:-2]:  # nothing to broadcast (no GQA grouping): skip NumPy's helpers
        out = np.empty(a.shape[:-1] + (b.shape[-1],), a.dtype)
    else:
        out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), a.dtype)
        a, b = np.broadcast_to(a, out.shape[:-2] + a.shape[-2:]), np.broadcast_to(b, out.shape[:-2] + b.shape[-2:])
    n = out.shape[0]
    if matmul_module._POOL is None or n < 2 or out.size * a.shape[-1] < matmul_module.SPLIT_MIN_WORK:
        return np.matmul(a, b, out=out)
    parts = min(n, matmul_module.GEMM_THREADS)
    bounds = [n * i // parts for i in range(parts + 1)]  # np.linspace's bounds, without its ~10 us
    # the last block runs on this thread, which would otherwise only wait (one hand-off fewer)
    jobs = [matmul_module._POOL.submit(np.matmul, a[s:e], b[s:e], out=out[s:e])
            for s, e in zip(bounds[:-2], bounds[1:-1])]
    np.matmul(a[bounds[-2]:], b[bounds[-2]:], out=out[bounds[-2]:])
    for job in jobs:
        job.result()
    return out


def attention_forward(q, k, v, scale, offset):
    """Fast twin of attention_forward_reference: two batched GEMMs around a fused scale/mask/softmax."""
    _check(q, k, v)
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    qg = _heads(q, Hk)  # (B, Hk, G, Tq, D)
    kg, vg = (x.transpose(0, 2, 1, 3)[:, :, None] for x in (k, v))  # (B, Hk, 1, Tk, D)
    s = _bmm(qg, kg.swapaxes(-1, -2))  # (B, Hk, G, Tq, Tk) scores
    rows = s.reshape(B * H, Tq, Tk)
    kernel = _softmax_parallel if _parallel(s.size) else _softmax_serial
    kernel(rows, q.dtype.type(scale), np.int64(offset))
    out = _bmm(s, vg)  # (B, Hk, G, Tq, D)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2, 4)).reshape(B, Tq, H, D), s.reshape(B, H, Tq, Tk)


def attention_backward(q, k, v, out, p, grad, scale):
    """Fast twin of attention_backward_reference: five batched GEMMs and a fused softmax backward."""
    _check(q, k, v)
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    G = H // Hk
    pg = p.reshape(B, Hk, G, Tq, Tk)
    gg, qg = _heads(grad, Hk), _heads(q, Hk)
    kg, vg = (x.transpose(0, 2, 1, 3)[:, :, None] for x in (k, v))
    dv = _bmm(pg.swapaxes(-1, -2), gg).sum(2)  # (B, Hk, Tk, D)
    dp = _bmm(gg, vg.swapaxes(-1, -2))  # (B, Hk, G, Tq, Tk)
    delta = np.einsum("bthd,bthd->bht", grad, out).reshape(B * H, Tq)
    kernel = _softmax_backward_parallel if _parallel(dp.size) else _softmax_backward_serial
    kernel(p.reshape(B * H, Tq, Tk), dp.reshape(B * H, Tq, Tk), np.ascontiguousarray(delta), q.dtype.type(scale))
    dq = _bmm(dp, kg)  # (B, Hk, G, Tq, D)
    dk = _bmm(dp.swapaxes(-1, -2), qg).sum(2)  # (B, Hk, Tk, D)
    return (np.ascontiguousarray(dq.transpose(0, 3, 1, 2, 4)).reshape(B, Tq, H, D),
            np.ascontiguousarray(dk.transpose(0, 2, 1, 3)), np.ascontiguousarray(dv.transpose(0, 2, 1, 3)))
