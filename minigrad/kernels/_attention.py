"""Fused scaled-dot-product attention, forward and backward, one (batch, head) pair per iteration.

Layout: q (B, Tq, H, D), k and v (B, Tk, Hk, D), out (B, Tq, H, D): the layout the projections
produce before the heads are transposed, so the attention of a model needs no copies. Query head
h reads key/value head h // (H / Hk) (grouped-query attention). Query i attends to keys
j <= i + offset: offset 0 is PyTorch's top-left causal mask, offset >= Tk no mask at all. A
sliding window (flash-attention's left window_size) also hides keys j < i + offset - window: the
query sees its own position and the `window` keys before it; None is no window.

Each numba thread owns whole heads and calls numpy's single-threaded OpenBLAS on them in place
(the row stride of a head is H * D, so no head is ever copied out). Queries go in blocks of
ATTENTION_BLOCK rows, and a block multiplies only the keys it can see: the causal half of the scores,
and the keys left of a sliding window, are never computed. The scale rides in the GEMM's alpha; mask
and softmax happen in one sweep. The forward keeps the probabilities P (B, H, Tq, Tk) for backward,
as PyTorch's CPU math path does. Inputs of other dtypes, and any input without numpy's OpenBLAS
(another BLAS build), take the NumPy twins.
"""
import numpy as np
from numba import njit, prange

from . import _blas as blas
from ._common import compiled, row_max, row_sum, vexp

# Query rows per GEMM: a block skips the keys its last row cannot see, so smaller blocks compute less
# of the causal half but make more BLAS calls. Re-measure: python benchmarks/bench_thresholds.py attention
ATTENTION_BLOCK = 64


def attention_forward_reference(q, k, v, scale, offset, window=None):
    """(out (B, Tq, H, D), probabilities (B, H, Tq, Tk)) by NumPy composites."""
    _check(q, k, v, offset, window)
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    qh = q.transpose(0, 2, 1, 3)
    kh = np.repeat(k.transpose(0, 2, 1, 3), H // Hk, axis=1)
    vh = np.repeat(v.transpose(0, 2, 1, 3), H // Hk, axis=1)
    scores = (qh @ kh.swapaxes(-1, -2)) * q.dtype.type(scale)
    last = np.arange(Tq)[:, None] + min(offset, Tk)  # the last key each query sees (min: no int64 overflow)
    visible = np.arange(Tk)[None, :] <= last
    if window is not None:
        visible &= np.arange(Tk)[None, :] >= last - window
    scores = np.where(visible, scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3), p


def attention_backward_reference(q, k, v, out, p, grad, scale, offset, window=None):
    """(dq, dk, dv) in the layouts of q, k and v, given out and P from the forward (whose zeros
    already carry the mask: offset and window are for the fast twin, which skips the keys a query
    cannot see)."""
    _check(q, k, v, offset, window)
    _check_backward(q, k, out, p, grad)
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


@njit(cache=True, error_model="numpy")
def _visible(i, offset, window, Tk):
    """The keys lo..hi-1 that query row i sees (window >= Tq + Tk: no window)."""
    return max(0, i + offset - window), min(Tk, i + offset + 1)


@njit(cache=True, error_model="numpy")
def _softmax_rows(p, i0, i1, offset, window):
    """In place on rows i0..i1 of one pair's scaled scores p (Tq, Tk): mask the keys outside each row's
    lo..hi-1, softmax (masked entries become exact zeros). Each loop reads and writes one array: with
    two names for the same row LLVM's alias check fails at run time and takes its scalar loop (4-6x slower)."""
    for i in range(i0, i1):
        lo, hi = _visible(i, offset, window, p.shape[1])
        row = p[i, lo:hi]
        m = row_max(row)
        for j in range(hi - lo):
            row[j] = vexp(row[j] - m)
        inv = row.dtype.type(1.0 / row_sum(row))
        for j in range(hi - lo):
            row[j] *= inv
        p[i, :lo] = 0
        p[i, hi:] = 0


@njit(cache=True, error_model="numpy", parallel=True)
def _forward(address, gemv_address, q, qs, k, ks, v, vs, Tk, Hk, scale, offset, window, block, out, p):
    """q, k, v are addresses with element strides qs, ks, vs = (batch, time, head); out and p arrays.
    A single query row (a decoding step) goes through GEMV, which streams K and V once; GEMM would
    pack them first, reading the whole cache twice."""
    B, Tq, H, D = out.shape
    item = out.itemsize
    one, zero, scale = out.dtype.type(1), out.dtype.type(0), out.dtype.type(scale)
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kh = h // (H // Hk)
        qa = q + (b * qs[0] + h * qs[2]) * item  # &q[b, 0, h, 0]; rows qs[1] apart
        ka, va = k + (b * ks[0] + kh * ks[2]) * item, v + (b * vs[0] + kh * vs[2]) * item
        oa = out.ctypes.data + (b * Tq * H + h) * D * item
        pa = p.ctypes.data + bh * Tq * Tk * item
        for i0 in range(0, Tq, block):
            i1 = min(Tq, i0 + block)
            lo, _ = _visible(i0, offset, window, Tk)  # the block's keys: lo..hi-1
            _, hi = _visible(i1 - 1, offset, window, Tk)
            rows_p = pa + (i0 * Tk + lo) * item
            q_rows, k_lo, v_lo, o_rows = qa + i0 * qs[1] * item, ka + lo * ks[1] * item, va + lo * vs[1] * item, \
                oa + i0 * H * D * item
            if i1 - i0 == 1:
                blas.gemv(gemv_address, blas.NO_TRANS, hi - lo, D, scale, k_lo, ks[1], q_rows, 1, zero, rows_p, 1)
            else:
                blas.gemm(address, blas.NO_TRANS, blas.TRANS, i1 - i0, hi - lo, D, scale, q_rows, qs[1], k_lo,
                          ks[1], zero, rows_p, Tk)  # S = scale Q K^T
            _softmax_rows(p[b, h], i0, i1, offset, window)
            if i1 - i0 == 1:
                blas.gemv(gemv_address, blas.TRANS, hi - lo, D, one, v_lo, vs[1], rows_p, 1, zero, o_rows, 1)
            else:
                blas.gemm(address, blas.NO_TRANS, blas.NO_TRANS, i1 - i0, D, hi - lo, one, rows_p, Tk, v_lo,
                          vs[1], zero, o_rows, H * D)  # O = P V


@njit(cache=True, error_model="numpy", parallel=True)
def _backward(address, q, qs, k, ks, v, vs, g, gs, p, delta, scale, offset, window, block, dq, dk, dv):
    """q, k, v and the output's gradient g are addresses with element strides (batch, time, head);
    p, delta = rowsum(g * out) (B, H, Tq) and the outputs are arrays. dk and dv must come in zeroed:
    the query heads of a key/value head accumulate into them, so each iteration owns one (batch,
    key/value head) pair and its group of query heads."""
    B, Tq, H, D = dq.shape
    Tk, Hk = dk.shape[1], dk.shape[2]
    G = H // Hk
    item = dq.itemsize
    one, zero, scale = dq.dtype.type(1), dq.dtype.type(0), dq.dtype.type(scale)
    for bkh in prange(B * Hk):
        b, kh = bkh // Hk, bkh % Hk
        ds = np.empty((Tq, Tk), dq.dtype)  # dP, then dS, of one query head
        ka, va = k + (b * ks[0] + kh * ks[2]) * item, v + (b * vs[0] + kh * vs[2]) * item
        dka = dk.ctypes.data + (b * Tk * Hk + kh) * D * item
        dva = dv.ctypes.data + (b * Tk * Hk + kh) * D * item
        for h in range(kh * G, (kh + 1) * G):
            pa = p.ctypes.data + (b * H + h) * Tq * Tk * item
            for i0 in range(0, Tq, block):
                i1 = min(Tq, i0 + block)
                lo, _ = _visible(i0, offset, window, Tk)  # the block's keys: lo..hi-1
                _, hi = _visible(i1 - 1, offset, window, Tk)
                n = hi - lo
                qa = q + (b * qs[0] + i0 * qs[1] + h * qs[2]) * item
                ga = g + (b * gs[0] + i0 * gs[1] + h * gs[2]) * item
                dqa = dq.ctypes.data + ((b * Tq + i0) * H + h) * D * item
                rows_p, rows_ds = pa + (i0 * Tk + lo) * item, ds.ctypes.data + (i0 * Tk + lo) * item
                ka_lo, va_lo = ka + lo * ks[1] * item, va + lo * vs[1] * item
                dka_lo, dva_lo = dka + lo * Hk * D * item, dva + lo * Hk * D * item
                blas.gemm(address, blas.TRANS, blas.NO_TRANS, n, D, i1 - i0, one, rows_p, Tk, ga, gs[1], one,
                          dva_lo, Hk * D)  # dV += P^T dO
                blas.gemm(address, blas.NO_TRANS, blas.TRANS, i1 - i0, n, D, one, ga, gs[1], va_lo, vs[1], zero,
                          rows_ds, Tk)  # dP = dO V^T
                for i in range(i0, i1):  # dS = P * (dP - delta) * scale
                    d, prow, drow = delta[b, h, i], p[b, h, i], ds[i]
                    for j in range(lo, hi):
                        drow[j] = prow[j] * (drow[j] - d) * scale
                blas.gemm(address, blas.NO_TRANS, blas.NO_TRANS, i1 - i0, D, n, one, rows_ds, Tk, ka_lo, ks[1],
                          zero, dqa, H * D)  # dQ = dS K
                blas.gemm(address, blas.TRANS, blas.NO_TRANS, n, D, i1 - i0, one, rows_ds, Tk, qa, qs[1], one,
                          dka_lo, Hk * D)  # dK += dS^T Q


def _check(q, k, v, offset, window):
    for x in (q, k, v):
        if x.ndim != 4 or x.dtype != q.dtype:
            raise ValueError(f"attention needs 4-D q, k, v of one dtype, got {q.shape} {k.shape} {v.shape}")
    B, Tq, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D or H % k.shape[2]:
        raise ValueError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}")
    if offset < 0:
        raise ValueError(f"attention offset must be >= 0 (every query sees key 0), got {offset}")
    if window is not None and (window < 0 or Tq + offset > k.shape[1]):
        raise ValueError(f"an attention window must be >= 0 and every query's own key present "
                         f"(Tq + offset <= Tk), got window {window}, Tq {Tq}, offset {offset}, Tk {k.shape[1]}")


def _check_backward(q, k, out, p, grad):
    B, Tq, H, _ = q.shape
    for name, x, shape in (("out", out, q.shape), ("grad", grad, q.shape), ("p", p, (B, H, Tq, k.shape[1]))):
        if x.shape != shape or x.dtype != q.dtype:
            raise ValueError(f"attention_backward {name} must be {q.dtype} of shape {shape}, got {x.dtype} {x.shape}")


def _window(window, q, k):
    """The window as the kernels take it: an int, Tq + Tk (wider than any row) for None."""
    return q.shape[1] + k.shape[1] if window is None else min(window, q.shape[1] + k.shape[1])


def _address(q, k):
    """The BLAS to call, or None when the NumPy twin must run (another dtype, no numpy OpenBLAS, or
    nothing to do)."""
    address = blas.ADDRESS.get(("gemm", q.dtype))
    return None if q.size == 0 or k.size == 0 or not compiled(q) else address


def _strided(x):
    """(x, its address, element strides (batch, time, head)) as BLAS reads each head: rows of D
    contiguous elements at least D apart, aligned. x itself when it already is (a KV cache's
    (B, H, T, D) storage seen as (B, T, H, D) is), else a fresh C-contiguous copy."""
    _, T, _, D = x.shape
    item = x.itemsize
    readable = (x.flags.aligned and (D == 1 or x.strides[3] == item) and (T == 1 or x.strides[1] >= D * item)
                and all(st >= 0 and st % item == 0 for st in x.strides))
    if not readable:
        x = np.array(x, order="C")  # a new array: canonical strides, size-1 axes included
    strides = [st // item for st in x.strides[:3]]
    strides[1] = max(strides[1], D)  # a single row's stride is never stepped, but BLAS checks ld >= D
    return x, x.ctypes.data, tuple(strides)


def attention_forward(q, k, v, scale, offset, window=None):
    """Fast twin of attention_forward_reference."""
    _check(q, k, v, offset, window)
    address = _address(q, k)
    if address is None:
        return attention_forward_reference(q, k, v, scale, offset, window)
    (q, *qa), (k, *ka), (v, *va) = (_strided(x) for x in (q, k, v))
    B, Tq, H, D = q.shape
    out = np.empty((B, Tq, H, D), q.dtype)
    p = np.empty((B, H, Tq, k.shape[1]), q.dtype)
    _forward(address, blas.ADDRESS["gemv", q.dtype], *qa, *ka, *va, k.shape[1], k.shape[2], scale,
             min(offset, k.shape[1]), _window(window, q, k), ATTENTION_BLOCK, out, p)
    return out, p


def attention_backward(q, k, v, out, p, grad, scale, offset, window=None):
    """Fast twin of attention_backward_reference."""
    _check(q, k, v, offset, window)
    _check_backward(q, k, out, p, grad)
    address = _address(q, k)
    if address is None:
        return attention_backward_reference(q, k, v, out, p, grad, scale, offset, window)
    (q, *qa), (k, *ka), (v, *va), (grad, *ga) = (_strided(x) for x in (q, k, v, grad))
    delta = np.ascontiguousarray(np.einsum("bthd,bthd->bht", grad, out))
    dq, dk, dv = np.empty(q.shape, q.dtype), np.zeros(k.shape, k.dtype), np.zeros(v.shape, v.dtype)
    _backward(address, *qa, *ka, *va, *ga, np.ascontiguousarray(p), delta, scale, min(offset, k.shape[1]),
              _window(window, q, k), ATTENTION_BLOCK, dq, dk, dv)
    return dq, dk, dv
