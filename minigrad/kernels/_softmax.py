"""Softmax / log-softmax along the last axis and their backward passes.

The numba kernels work on C-contiguous (rows, V) views, one row per iteration (prange for big
inputs), with the shared row helpers of _common.py. Inputs of other dtypes take the NumPy twins.
"""
import numpy as np
from numba import njit, prange

from ._common import as_rows, compiled, exp_shifted, pick, row_dot, row_max, row_sum, vexp

# Parallel driver from this many elements. Re-measure: python benchmarks/bench_thresholds.py softmax
SOFTMAX_PARALLEL_MIN = 1 << 14


def softmax_reference(x):
    """Numerically stable softmax over the last axis; an all -inf row gives NaN."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward_reference(y, grad):
    """grad_x = y * (grad - sum(grad * y)) given the softmax output y."""
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


def log_softmax_reference(x):
    """Numerically stable log-softmax over the last axis."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward_reference(y, grad):
    """grad_x = grad - exp(y) * sum(grad) given the log-softmax output y."""
    return grad - np.exp(y) * grad.sum(axis=-1, keepdims=True)


@njit(cache=True, error_model="numpy")
def _softmax_row(x, out):
    exp_shifted(x, row_max(x), out)
    inv = out.dtype.type(1.0 / row_sum(out))
    for j in range(x.shape[0]):
        out[j] *= inv


@njit(cache=True, error_model="numpy")
def _log_softmax_row(x, out):
    m = row_max(x)
    exp_shifted(x, m, out)
    shift = out.dtype.type(m + np.log(row_sum(out)))
    for j in range(x.shape[0]):
        out[j] = x[j] - shift


@njit(cache=True, error_model="numpy")
def _softmax_backward_row(y, g, out):
    d = out.dtype.type(row_dot(g, y))
    for j in range(y.shape[0]):
        out[j] = y[j] * (g[j] - d)


@njit(cache=True, error_model="numpy")
def _log_softmax_backward_row(y, g, out):
    s = out.dtype.type(row_sum(g))
    for j in range(y.shape[0]):
        out[j] = g[j] - vexp(y[j]) * s


# Each row kernel has a serial and a prange driver; numba compiles lazily, so a process pays the
# dearer parallel compile only once it sees big inputs.

@njit(cache=True, error_model="numpy")
def _softmax_serial(x, out):
    for i in range(x.shape[0]):
        _softmax_row(x[i], out[i])


@njit(cache=True, error_model="numpy", parallel=True)
def _softmax_parallel(x, out):
    for i in prange(x.shape[0]):
        _softmax_row(x[i], out[i])


@njit(cache=True, error_model="numpy")
def _log_softmax_serial(x, out):
    for i in range(x.shape[0]):
        _log_softmax_row(x[i], out[i])


@njit(cache=True, error_model="numpy", parallel=True)
def _log_softmax_parallel(x, out):
    for i in prange(x.shape[0]):
        _log_softmax_row(x[i], out[i])


@njit(cache=True, error_model="numpy")
def _softmax_backward_serial(y, g, out):
    for i in range(y.shape[0]):
        _softmax_backward_row(y[i], g[i], out[i])


@njit(cache=True, error_model="numpy", parallel=True)
def _softmax_backward_parallel(y, g, out):
    for i in prange(y.shape[0]):
        _softmax_backward_row(y[i], g[i], out[i])


@njit(cache=True, error_model="numpy")
def _log_softmax_backward_serial(y, g, out):
    for i in range(y.shape[0]):
        _log_softmax_backward_row(y[i], g[i], out[i])


@njit(cache=True, error_model="numpy", parallel=True)
def _log_softmax_backward_parallel(y, g, out):
    for i in prange(y.shape[0]):
        _log_softmax_backward_row(y[i], g[i], out[i])


def _rowwise(serial, parallel, reference, *arrays):
    arrays = [np.asarray(a) for a in arrays]
    shape = arrays[0].shape
    for a in arrays[1:]:
        if a.shape != shape or a.dtype != arrays[0].dtype:
            raise ValueError(f"operands differ: {shape} {arrays[0].dtype} vs {a.shape} {a.dtype}")
    if not compiled(arrays[0]):
        return reference(*arrays)
    if arrays[0].size == 0:
        return np.empty(shape, arrays[0].dtype)
    rows = [as_rows(a) for a in arrays]
    out = np.empty(rows[0].shape, rows[0].dtype)
    pick(serial, parallel, out.size, SOFTMAX_PARALLEL_MIN)(*rows, out)
    return out.reshape(shape)


def softmax(x):
    """Numba twin of softmax_reference."""
    return _rowwise(_softmax_serial, _softmax_parallel, softmax_reference, x)


def softmax_backward(y, grad):
    """Numba twin of softmax_backward_reference."""
    return _rowwise(_softmax_backward_serial, _softmax_backward_parallel, softmax_backward_reference, y, grad)


def log_softmax(x):
    """Numba twin of log_softmax_reference."""
    return _rowwise(_log_softmax_serial, _log_softmax_parallel, log_softmax_reference, x)


def log_softmax_backward(y, grad):
    """Numba twin of log_softmax_backward_reference."""
    return _rowwise(_log_softmax_backward_serial, _log_softmax_backward_parallel, log_softmax_backward_reference, y, grad)
