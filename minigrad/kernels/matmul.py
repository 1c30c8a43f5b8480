"""Batched matrix multiply and its backward pass.

Every path ends in numpy's BLAS (OpenBLAS): a hand-written numba loop is ~3x
slower, and numba's own np.dot goes through SciPy's separate OpenBLAS whose
thread pool then competes with numpy's. Measured on 2 cores (see
benchmarks/bench_kernels.py): folding the batch of `a` into rows when `b` is
2-D (one big GEMM instead of one per batch entry) beats `a @ b`, and the
weight gradient of that case becomes a single GEMM with no batch reduction.
For batch-vs-batch products numpy's own per-matrix GEMM loop measured faster
than a numba prange over np.dot (which oversubscribes the BLAS threads), so
those go straight to np.matmul.
"""
import ctypes
import glob
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _openblas():
    """numpy's bundled OpenBLAS through ctypes, or None when this numpy links another BLAS."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return get, set_
    return None


# OpenBLAS's own threads synchronise inside each GEMM; on 2 busy cores that made the weight
# gradients' shape (384 x 2048 @ 2048 x 384) 6-10x slower with 2 threads than with 1 (47 ms vs
# 4-8 ms; torch: 8 ms). So OpenBLAS runs single-threaded and a big GEMM is split into row blocks,
# one per thread of this pool (same thread count OpenBLAS had): each block is an independent
# single-threaded GEMM, with no synchronisation until the end.
_BLAS = _openblas()
GEMM_THREADS = 1
if _BLAS is not None:
    GEMM_THREADS = max(1, _BLAS[0]())
    _BLAS[1](1)
_POOL = ThreadPoolExecutor(GEMM_THREADS) if GEMM_THREADS > 1 else None
SPLIT_MIN_WORK = 1 << 22  # rows * cols * inner below which one thread does the whole GEMM


def _gemm(a, b):
    """2-D a @ b, split by rows of the output over the GEMM pool when it is big enough. (A product of
    a few rows, a decoding step, stays on one thread: split by columns it measured 1.6-12x slower.)"""
    rows = a.shape[0]
    if _POOL is None or rows < 2 * 16 or rows * a.shape[1] * b.shape[1] < SPLIT_MIN_WORK:
        return np.matmul(a, b)
    out = np.empty((rows, b.shape[1]), np.result_type(a, b))
    bounds = [rows * i // GEMM_THREADS for i in range(GEMM_THREADS + 1)]  # as np.linspace's, without its ~10 us
    # the last block runs on this thread, which would otherwise only wait (one hand-off fewer)
    jobs = [_POOL.submit(np.matmul, a[s:e], b, out=out[s:e]) for s, e in zip(bounds[:-2], bounds[1:-1])]
    np.matmul(a[bounds[-2]:], b, out=out[bounds[-2]:])
    for job in jobs:
        job.result()
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


def _sum_to(x, shape):
    """Sum the broadcast leading dims of x away so it has exactly `shape`."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape[:-2]) if n == 1 and x.shape[i + lead] != 1
    )
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x.reshape(shape)


def matmul_reference(a, b):
    """a (..., n, k) @ b (..., k, m) with numpy broadcasting of batch dims."""
    _check_matmul(a, b)
    return np.matmul(a, b)


def matmul_backward_reference(a, b, grad):
    """Gradients of sum(grad * (a @ b)) w.r.t. a and b, reduced to their shapes."""
    _check_matmul(a, b)
    _check_grad(a, b, grad)
    grad_a = _sum_to(np.matmul(grad, np.swapaxes(b, -1, -2)), a.shape)
    grad_b = _sum_to(np.matmul(np.swapaxes(a, -1, -2), grad), b.shape)
    return grad_a, grad_b


def _fold_rows(x):
    """(..., r, c) -> (prod(...) * r, c): a view when x is C-contiguous, else one copy. The copy is
    cheaper than the alternative, a batch of small GEMMs (np.matmul synchronises OpenBLAS's threads
    once per matrix, which on 2 busy cores measured up to 40x slower than one big GEMM)."""
    return x.reshape(-1, x.shape[-1])


def matmul(a, b):
    """Fast path of matmul_reference."""
    _check_matmul(a, b)
    if b.ndim == 2 and a.ndim > 2:
        return _gemm(_fold_rows(a), b).reshape(a.shape[:-1] + (b.shape[-1],))
    if a.ndim == 2 and b.ndim == 2:
        return _gemm(a, b)
    return np.matmul(a, b)


def matmul_backward(a, b, grad):
    """Fast path of matmul_backward_reference."""
    _check_matmul(a, b)
    _check_grad(a, b, grad)
    if b.ndim == 2 and a.ndim > 2:
        a2, g2 = _fold_rows(a), _fold_rows(grad)
        return _gemm(g2, b.T).reshape(a.shape), _gemm(a2.T, g2)
    if a.ndim == 2 and b.ndim == 2:
        return _gemm(grad, b.T), _gemm(a.T, grad)
    return matmul_backward_reference(a, b, grad)
