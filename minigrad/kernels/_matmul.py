"""Batched matrix multiply and its backward pass.

Every path ends in numpy's own OpenBLAS (a hand-written numba loop is several times slower).
Folding the batch of `a` into rows when `b` is 2-D makes one big GEMM instead of one per batch
entry, and the weight gradient of that case a single GEMM with no batch reduction. A big 2-D
product is split over numba's threads (see _blas.py for why not OpenBLAS's own threads).
Batch-vs-batch products, dtypes other than float32/float64 and other BLAS builds go to np.matmul.
"""
import numba
import numpy as np
from numba import njit, prange

from minigrad._shapes import unbroadcast

from . import _blas as blas
from ._common import as_float32

# float32 x @ W.T with at most STREAMED_ROWS rows (decoding: one row a sequence) runs in
# rows_by_weight_t, which reads W once for all rows; BLAS packs W first, which costs more than the
# product below ~16 rows (8 x 384 @ 384 x 1536: 0.24 ms against 0.36 ms, 2 threads).
# Re-measure: python benchmarks/bench_decode.py --sections batched
STREAMED_ROWS = 16
# Else x @ W.T with fewer rows than FEW_ROWS (and not fewer columns) runs turned around, as (W @ x.T).T,
# where OpenBLAS's sgemm is faster (see _gemm). Re-measure: python benchmarks/bench_serve.py
FEW_ROWS = 64

# A product of rows * cols * inner below GEMM_SPLIT_MIN_WORK runs on one thread (one np.matmul call).
# Re-measure: python benchmarks/bench_thresholds.py gemm
GEMM_SPLIT_MIN_WORK = 1 << 18
# The same for one row (GEMV). A decoding step's GEMV streams its weight from L3, so threads pay off
# on smaller products than in a warm loop; the end-to-end check is the decode rows of bench_gpt.py.
# Re-measure: python benchmarks/bench_thresholds.py gemv
GEMV_SPLIT_MIN_WORK = 1 << 17
# Split into row bands from GEMM_ROWS_PER_THREAD rows a thread, else into column bands, which need
# GEMM_COLS_PER_THREAD columns a thread to pay for the launch (below both: one thread).
GEMM_ROWS_PER_THREAD = 16
GEMM_COLS_PER_THREAD = 64


@njit(cache=True, error_model="numpy")
def _gemm_block(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, item, alpha, beta, part, parts, by_rows):
    """Block `part` of `parts` of C (m x n, C-contiguous) = op(A) op(B): a band of rows of C, or of
    columns when C has too few rows to share."""
    if by_rows:
        s, e = m * part // parts, m * (part + 1) // parts
        a_off = s * (lda if trans_a == blas.NO_TRANS else 1)
        blas.gemm(address, trans_a, trans_b, e - s, n, k, alpha, a + a_off * item, lda, b, ldb, beta,
                  c + s * n * item, n)
    else:
        s, e = n * part // parts, n * (part + 1) // parts
        b_off = s * (1 if trans_b == blas.NO_TRANS else ldb)
        blas.gemm(address, trans_a, trans_b, m, e - s, k, alpha, a, lda, b + b_off * item, ldb, beta,
                  c + s * item, n)


@njit(cache=True, error_model="numpy")
def _gemv_block(address, trans_a, trans_b, n, k, a, lda, b, ldb, c, item, alpha, beta, part, parts):
    """The same for a single row (m = 1) through GEMV, which streams B once (GEMM would pack it first):
    c = op(B)ᵀ a, its columns split over the parts."""
    s, e = n * part // parts, n * (part + 1) // parts
    incx = 1 if trans_a == blas.NO_TRANS else lda
    if trans_b == blas.NO_TRANS:  # B is k x n: c = Bᵀ a
        blas.gemv(address, blas.TRANS, k, e - s, alpha, b + s * item, ldb, a, incx, beta, c + s * item, 1)
    else:  # B is stored as its n x k transpose: c = B_stored a
        blas.gemv(address, blas.NO_TRANS, e - s, k, alpha, b + s * ldb * item, ldb, a, incx, beta, c + s * item, 1)


@njit(cache=True, error_model="numpy", parallel=True)
def _gemm_split(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, item, alpha, beta, parts, by_rows):
    for p in prange(parts):
        part = np.int64(p)  # prange's index is typed both uint64 and int64: one type, one compile of each block
        if m == 1:
            _gemv_block(address, trans_a, trans_b, n, k, a, lda, b, ldb, c, item, alpha, beta, part, parts)
        else:
            _gemm_block(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, item, alpha, beta, part, parts, by_rows)


# reassoc lets LLVM vectorise the float32 sums; NaN and inf behave as without fastmath
_SUMS = {"reassoc", "contract"}


@njit(cache=True, error_model="numpy", fastmath=_SUMS)
def _dot(x, i, w, j):
    """x[i] . w[j], w float32 or bfloat16 patterns, summed in float32."""
    acc = np.float32(0.0)
    for t in range(x.shape[1]):
        acc += x[i, t] * as_float32(w[j, t])
    return acc


@njit(cache=True, error_model="numpy", fastmath=_SUMS)
def _four_by_four(x, i, w, j, out):
    """out[i:i+4, j:j+4] = x[i:i+4] @ w[j:j+4].T: each weight loaded once for four rows, sixteen sums
    in registers (4 x 4 ran ~20% ahead of 4 x 2 at 8-16 rows; a batch-8 decoding step 6.2 ms against 8.2)."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
    c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = np.float32(0.0)
    for t in range(x.shape[1]):
        u, v, y, z = as_float32(w[j, t]), as_float32(w[j + 1, t]), as_float32(w[j + 2, t]), as_float32(w[j + 3, t])
        x0, x1, x2, x3 = x[i, t], x[i + 1, t], x[i + 2, t], x[i + 3, t]
        a0, a1, a2, a3 = a0 + x0 * u, a1 + x1 * u, a2 + x2 * u, a3 + x3 * u
        b0, b1, b2, b3 = b0 + x0 * v, b1 + x1 * v, b2 + x2 * v, b3 + x3 * v
        c0, c1, c2, c3 = c0 + x0 * y, c1 + x1 * y, c2 + x2 * y, c3 + x3 * y
        d0, d1, d2, d3 = d0 + x0 * z, d1 + x1 * z, d2 + x2 * z, d3 + x3 * z
    for r, (p, q, g, h) in enumerate(((a0, b0, c0, d0), (a1, b1, c1, d1), (a2, b2, c2, d2), (a3, b3, c3, d3))):
        out[i + r, j], out[i + r, j + 1], out[i + r, j + 2], out[i + r, j + 3] = p, q, g, h


@njit(cache=True, error_model="numpy", parallel=True)
def rows_by_weight_t(x, w, out, parts):
    """out (m, n) = x (m, k) float32 @ w (n, k).T for a few rows of x, w float32 or bfloat16 patterns
    (uint16): w's rows in `parts` bands over the threads, each row read from memory once for all of x
    (blocks of 4 x 4, the edges one dot product at a time)."""
    m, n = x.shape[0], w.shape[0]
    for p in prange(parts):
        s, e = n * p // parts, n * (p + 1) // parts
        for j in range(s, e, 4):
            i = 0
            while j + 4 <= e and i + 4 <= m:
                _four_by_four(x, i, w, j, out)
                i += 4
            for jj in range(j, min(j + 4, e)):
                for r in range(i, m):
                    out[r, jj] = _dot(x, r, w, jj)


def _gemm(a, b):
    """2-D a @ b. A small product goes straight to np.matmul (numpy's OpenBLAS behind ~1.5 us of
    overhead); a big one is split into row bands (column bands when it has few rows, a decoding
    step's GEMV) over numba's threads, each band one single-threaded BLAS call."""
    (m, k), n = a.shape, b.shape[1]
    threads = numba.get_num_threads()
    weight_t = b.flags.f_contiguous and not b.flags.c_contiguous  # b is W.T, W (n, k) C-contiguous
    if (weight_t and m <= STREAMED_ROWS and a.dtype == b.dtype == np.float32 and threads > 1
            and m * n * k >= GEMV_SPLIT_MIN_WORK):
        out = np.empty((m, n), np.float32)
        rows_by_weight_t(np.ascontiguousarray(a), b.T, out, threads)
        return out
    if 1 < m < FEW_ROWS <= n and weight_t:
        # x @ W.T with a few rows (a batch of decoding sequences): OpenBLAS's sgemm with a transposed
        # B is 2-3x slower there than the same product turned around, (W @ x.T).T (8 x 384 @ 384 x 1536:
        # 1.6 ms against 0.7 ms, one thread); the turned product has many rows, so it splits by rows
        return np.ascontiguousarray(_gemm(b.T, a.T).T)
    by_rows = m >= GEMM_ROWS_PER_THREAD * threads
    work = m * n * k
    if (threads == 1 or work == 0 or work < (GEMV_SPLIT_MIN_WORK if m == 1 else GEMM_SPLIT_MIN_WORK)
            or b.dtype != a.dtype or (not by_rows and n < GEMM_COLS_PER_THREAD * threads)
            or ("gemm", a.dtype) not in blas.ADDRESS):
        return np.matmul(a, b)
    a, trans_a, lda = blas.operand(a)
    b, trans_b, ldb = blas.operand(b)
    out = np.empty((m, n), a.dtype)
    address = blas.ADDRESS["gemv" if m == 1 else "gemm", a.dtype]
    _gemm_split(address, trans_a, trans_b, m, n, k, a.ctypes.data, lda, b.ctypes.data, ldb, out.ctypes.data,
                a.itemsize, a.dtype.type(1), a.dtype.type(0), threads, by_rows)
    return out


def _check_matmul(a, b):
    """Validate operands the way every matmul entry point expects them."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs operands with ndim >= 2, got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul inner dimensions differ: a{a.shape} has k={a.shape[-1]}, "
            f"b{b.shape} has k={b.shape[-2]}"
        )
    if a.dtype != b.dtype:
        raise ValueError(f"matmul operands must share a dtype, got {a.dtype} and {b.dtype}")


def _check_grad(a, b, grad):
    """grad must have the shape of a @ b."""
    expected = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    if grad.shape != expected:
        raise ValueError(f"matmul_backward grad has shape {grad.shape}, expected {expected}")


def matmul_reference(a, b):
    """a (..., n, k) @ b (..., k, m) with numpy broadcasting of batch dims."""
    _check_matmul(a, b)
    return np.matmul(a, b)


def matmul_backward_reference(a, b, grad):
    """Gradients of sum(grad * (a @ b)) w.r.t. a and b, reduced to their shapes."""
    _check_matmul(a, b)
    _check_grad(a, b, grad)
    grad_a = unbroadcast(np.matmul(grad, np.swapaxes(b, -1, -2)), a.shape)
    grad_b = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), grad), b.shape)
    return grad_a, grad_b


def _fold_rows(x):
    """(..., r, c) -> (prod(...) * r, c): a view when x is C-contiguous, else one copy, which is
    cheaper than the alternative, a batch of small GEMMs."""
    return x.reshape(-1, x.shape[-1])


def matmul(a, b):
    """Fast twin of matmul_reference."""
    _check_matmul(a, b)
    if b.ndim == 2 and a.ndim > 2:
        return _gemm(_fold_rows(a), b).reshape(a.shape[:-1] + (b.shape[-1],))
    if a.ndim == 2 and b.ndim == 2:
        return _gemm(a, b)
    return np.matmul(a, b)


def matmul_backward(a, b, grad):
    """Fast twin of matmul_backward_reference."""
    _check_matmul(a, b)
    _check_grad(a, b, grad)
    if b.ndim == 2 and a.ndim > 2:
        a2, g2 = _fold_rows(a), _fold_rows(grad)
        return _gemm(g2, b.T).reshape(a.shape), _gemm(a2.T, g2)
    if a.ndim == 2 and b.ndim == 2:
        return _gemm(grad, b.T), _gemm(a.T, grad)
    return matmul_backward_reference(a, b, grad)
