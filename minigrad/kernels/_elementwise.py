"""Fused elementwise kernels of the GPT: rotary embedding and relu², each one parallel sweep.

NumPy spends a temporary (and a sweep) per operator: the rotary embedding takes four products,
two sums and the halves' copies; relu² its mask or maximum and a product. Inputs of other dtypes
(and rotary tables of other shapes) take the NumPy twins.
"""
import numpy as np
from numba import njit, prange

from ._common import compiled, pick

# Parallel drivers from this many elements. relu² is a pure stream, so its threads pay off only on
# big inputs. Re-measure: python benchmarks/bench_thresholds.py rotary relu_squared
ROTARY_PARALLEL_MIN = 1 << 14
RELU2_PARALLEL_MIN = 1 << 19


def rotary_reference(x, cos, sin):
    """(x1 cos + x2 sin, x2 cos - x1 sin) over the halves (x1, x2) of the last axis; cos and sin
    broadcast against a half."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return np.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


def relu_squared_reference(x):
    return np.square(np.maximum(x, 0))


def relu_squared_backward_reference(x, grad):
    """grad * 2 relu(x)."""
    r = np.maximum(x, 0)
    return grad * (r + r)


@njit(cache=True, error_model="numpy")
def _rotary_row(x, c, s, out):
    d = c.shape[0]
    for j in range(d):
        x1, x2 = x[j], x[j + d]
        out[j] = x1 * c[j] + x2 * s[j]
        out[j + d] = x2 * c[j] - x1 * s[j]


@njit(cache=True, error_model="numpy")
def _rotary_serial(x, cos, sin, out):
    # x, out (B, T, H, D); cos, sin (T, D/2)
    for bt in range(x.shape[0] * x.shape[1]):
        b, t = bt // x.shape[1], bt % x.shape[1]
        for h in range(x.shape[2]):
            _rotary_row(x[b, t, h], cos[t], sin[t], out[b, t, h])


@njit(cache=True, error_model="numpy", parallel=True)
def _rotary_parallel(x, cos, sin, out):
    for bt in prange(x.shape[0] * x.shape[1]):
        b, t = bt // x.shape[1], bt % x.shape[1]
        for h in range(x.shape[2]):
            _rotary_row(x[b, t, h], cos[t], sin[t], out[b, t, h])


def rotary(x, cos, sin):
    """Numba twin of rotary_reference for x (B, T, H, D) and tables of shape (1, T, 1, D/2) (the GPT's
    layout); any other shapes take the twin."""
    B, T, H, D = x.shape if x.ndim == 4 else (0, 0, 0, 0)
    table = (1, T, 1, D // 2)
    if (x.ndim != 4 or D % 2 or cos.shape != table or sin.shape != table or x.size == 0
            or not x.dtype == cos.dtype == sin.dtype or not compiled(x)):
        return rotary_reference(x, cos, sin)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    kernel = pick(_rotary_serial, _rotary_parallel, x.size, ROTARY_PARALLEL_MIN)
    kernel(x, np.ascontiguousarray(cos.reshape(T, D // 2)), np.ascontiguousarray(sin.reshape(T, D // 2)), out)
    return out


@njit(cache=True, error_model="numpy")
def _relu2_chunk(x, out, lo, hi):
    for i in range(lo, hi):
        r = x.dtype.type(0) if x[i] <= 0 else x[i]  # NaN passes, as np.maximum does
        out[i] = r * r


@njit(cache=True, error_model="numpy")
def _relu2_backward_chunk(x, g, out, lo, hi):
    for i in range(lo, hi):
        r = x.dtype.type(0) if x[i] <= 0 else x[i]  # NaN passes, as np.maximum does
        out[i] = g[i] * (r + r)


# Elements per prange iteration of relu²: big enough to amortise a task, small enough to balance the
# threads. Re-measure: python benchmarks/bench_thresholds.py relu_squared_chunk
RELU2_CHUNK = 1 << 14


@njit(cache=True, error_model="numpy")
def _relu2_serial(x, out, chunk):  # chunk: unused, the two drivers share one signature
    _relu2_chunk(x, out, 0, x.shape[0])


@njit(cache=True, error_model="numpy", parallel=True)
def _relu2_parallel(x, out, chunk):
    n = x.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        _relu2_chunk(x, out, c * chunk, min(n, (c + 1) * chunk))


@njit(cache=True, error_model="numpy")
def _relu2_backward_serial(x, g, out, chunk):  # chunk: unused, as above
    _relu2_backward_chunk(x, g, out, 0, x.shape[0])


@njit(cache=True, error_model="numpy", parallel=True)
def _relu2_backward_parallel(x, g, out, chunk):
    n = x.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        _relu2_backward_chunk(x, g, out, c * chunk, min(n, (c + 1) * chunk))


def relu_squared(x):
    """Numba twin of relu_squared_reference."""
    if not compiled(x):
        return relu_squared_reference(x)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    pick(_relu2_serial, _relu2_parallel, flat.size, RELU2_PARALLEL_MIN)(flat, out, RELU2_CHUNK)
    return out.reshape(x.shape)


def relu_squared_backward(x, grad):
    """Numba twin of relu_squared_backward_reference."""
    if grad.shape != x.shape:
        raise ValueError(f"relu_squared_backward: grad {grad.shape} differs from x {x.shape}")
    if not compiled(x):
        return relu_squared_backward_reference(x, grad)
    flat = np.ascontiguousarray(x).reshape(-1)
    g = np.ascontiguousarray(grad, dtype=x.dtype).reshape(-1)
    out = np.empty_like(flat)
    pick(_relu2_backward_serial, _relu2_backward_parallel, flat.size, RELU2_PARALLEL_MIN)(flat, g, out, RELU2_CHUNK)
    return out.reshape(x.shape)
