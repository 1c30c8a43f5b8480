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
import numpy as np


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
    """(..., r, c) -> (prod(...) * r, c) as a view, or None when that would need a copy."""
    if not x.flags.c_contiguous:
        return None
    return x.reshape(-1, x.shape[-1])


def matmul(a, b):
    """Fast path of matmul_reference."""
    _check_matmul(a, b)
    if b.ndim == 2 and a.ndim > 2:
        a2 = _fold_rows(a)
        if a2 is not None:
            return np.matmul(a2, b).reshape(a.shape[:-1] + (b.shape[-1],))
    return np.matmul(a, b)


def matmul_backward(a, b, grad):
    """Fast path of matmul_backward_reference."""
    _check_matmul(a, b)
    _check_grad(a, b, grad)
    if b.ndim == 2 and a.ndim > 2:
        a2 = _fold_rows(a)
        g2 = _fold_rows(grad)
        if a2 is not None and g2 is not None:
            grad_a = np.matmul(g2, b.T).reshape(a.shape)
            return grad_a, np.matmul(a2.T, g2)
    return matmul_backward_reference(a, b, grad)
