"""Batched matrix multiply and its backward pass (NumPy twins)."""
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
    grad_a = _sum_to(np.matmul(grad, np.swapaxes(b, -1, -2)), a.shape)
    grad_b = _sum_to(np.matmul(np.swapaxes(a, -1, -2), grad), b.shape)
    return grad_a, grad_b


# Interim: the fast names point at the twins until the numba kernels are committed.
matmul = matmul_reference
matmul_backward = matmul_backward_reference
