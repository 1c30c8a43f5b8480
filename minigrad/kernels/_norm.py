"""RMSNorm over the last axis (no weight), forward and backward, one row per iteration.

NumPy needs three sweeps and two temporaries for the forward (x*x, mean, x*rstd) and five for
the backward; these kernels make two sweeps over a row each, accumulating in float64. Inputs of
other dtypes take the NumPy twins.
"""
import numpy as np
from numba import njit, prange

from ._common import as_rows, compiled, pick, row_dot

# Parallel drivers from this many elements. Re-measure: python benchmarks/bench_thresholds.py rms_norm
RMS_NORM_PARALLEL_MIN = 1 << 13


def rms_norm_reference(x, eps):
    """(x / sqrt(mean(x², last axis) + eps), rstd with the last axis kept as 1)."""
    rstd = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + x.dtype.type(eps))
    return x * rstd, rstd


def rms_norm_backward_reference(out, rstd, grad):
    """grad_x = rstd * (grad - out * mean(grad * out, last axis)) given the forward's out and rstd."""
    return rstd * (grad - out * np.mean(grad * out, axis=-1, keepdims=True))


@njit(cache=True, error_model="numpy")
def _rms_row(x, eps, out, rstd, i):
    r = 1.0 / np.sqrt(row_dot(x, x) / x.shape[0] + eps)
    rstd[i] = r
    r32 = out.dtype.type(r)
    for j in range(x.shape[0]):
        out[j] = x[j] * r32


@njit(cache=True, error_model="numpy")
def _rms_backward_row(y, r, g, out):
    m = out.dtype.type(row_dot(g, y) / y.shape[0])
    for j in range(y.shape[0]):
        out[j] = r * (g[j] - y[j] * m)


@njit(cache=True, error_model="numpy")
def _rms_serial(x, eps, out, rstd):
    for i in range(x.shape[0]):
        _rms_row(x[i], eps, out[i], rstd, i)


@njit(cache=True, error_model="numpy", parallel=True)
def _rms_parallel(x, eps, out, rstd):
    for i in prange(x.shape[0]):  # int64(i): the serial driver's index type, so the row compiles once
        _rms_row(x[i], eps, out[i], rstd, np.int64(i))


@njit(cache=True, error_model="numpy")
def _rms_backward_serial(y, rstd, g, out):
    for i in range(y.shape[0]):
        _rms_backward_row(y[i], rstd[i], g[i], out[i])


@njit(cache=True, error_model="numpy", parallel=True)
def _rms_backward_parallel(y, rstd, g, out):
    for i in prange(y.shape[0]):
        _rms_backward_row(y[i], rstd[i], g[i], out[i])


def rms_norm(x, eps):
    """Numba twin of rms_norm_reference."""
    if x.size == 0 or not compiled(x):
        return rms_norm_reference(x, eps)
    rows = as_rows(x)
    out = np.empty(rows.shape, x.dtype)
    rstd = np.empty(rows.shape[0], x.dtype)
    pick(_rms_serial, _rms_parallel, rows.size, RMS_NORM_PARALLEL_MIN)(rows, x.dtype.type(eps), out, rstd)
    return out.reshape(x.shape), rstd.reshape(x.shape[:-1] + (1,))


def rms_norm_backward(out, rstd, grad):
    """Numba twin of rms_norm_backward_reference."""
    if out.shape != grad.shape or out.dtype != grad.dtype:
        raise ValueError(f"rms_norm_backward operands differ: {out.shape} {out.dtype} vs {grad.shape} {grad.dtype}")
    if out.size == 0 or not compiled(out):
        return rms_norm_backward_reference(out, rstd, grad)
    y, g = as_rows(out), as_rows(grad)
    dx = np.empty(y.shape, out.dtype)
    pick(_rms_backward_serial, _rms_backward_parallel, y.size, RMS_NORM_PARALLEL_MIN)(y, np.ascontiguousarray(rstd).reshape(-1), g, dx)
    return dx.reshape(out.shape)
