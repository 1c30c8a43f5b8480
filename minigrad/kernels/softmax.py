"""Softmax / log-softmax along the last axis and their backward passes.

The numba kernels work on C-contiguous (rows, V) views, one row per
iteration (prange for big inputs). numba has no SIMD exp without Intel SVML,
so `vexp` is a vectorisable exp (Cody-Waite reduction, polynomial, exponent
bits); row max and row sums use explicit lanes / reassociation so LLVM
vectorises them without fastmath flags that would change inf/NaN behaviour.
Row sums accumulate in float64, so float32 results are at least as accurate
as the twin's float32 pairwise sums.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload


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



@intrinsic
def _i32_as_f32(typingctx, i):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _i64_as_f64(typingctx, i):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@njit(cache=True, inline="always")
def _exp32(x):
    """float32 exp within 2 ulp of np.exp, including 0/inf/NaN and subnormal results."""
    lo = np.float32(-104.0)
    hi = np.float32(89.0)
    xc = x if x > lo else lo  # also maps NaN to lo so the int conversion stays defined
    xc = xc if xc < hi else hi
    n = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    # cephes expf minimax polynomial on [-ln2/2, ln2/2]
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    # 2**n as two normal halves so n in [-150, 128] never leaves the exponent range
    ni = np.int32(n)
    h = ni >> np.int32(1)
    y = p * _i32_as_f32((h + np.int32(127)) << np.int32(23))
    y = y * _i32_as_f32((ni - h + np.int32(127)) << np.int32(23))
    return x if x != x else y


@njit(cache=True, inline="always")
def _exp64(x):
    """float64 exp within 1 ulp of np.exp, including 0/inf/NaN and subnormal results."""
    lo = -746.0
    hi = 710.0
    xc = x if x > lo else lo
    xc = xc if xc < hi else hi
    n = np.floor(xc * 1.4426950408889634 + 0.5)
    r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    # Taylor series to r**13: truncation error < 1e-17 for |r| <= ln2/2
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r * r + r + 1.0
    ni = np.int64(n)
    h = ni >> np.int64(1)
    y = p * _i64_as_f64((h + np.int64(1023)) << np.int64(52))
    y = y * _i64_as_f64((ni - h + np.int64(1023)) << np.int64(52))
    return x if x != x else y


def vexp(x):
    """Scalar exp usable inside kernels; picks the float32 or float64 variant at compile time."""
    return np.exp(x)


@overload(vexp, inline="always")
def _vexp_overload(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: _exp64(x)


@njit(cache=True)
def row_max(x):
    """Max of a 1-D array; eight independent lanes let LLVM vectorise the compare chain."""
    n = x.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    nb = n - n % 8
    for j in range(0, nb, 8):
        m0 = x[j] if x[j] > m0 else m0
        m1 = x[j + 1] if x[j + 1] > m1 else m1
        m2 = x[j + 2] if x[j + 2] > m2 else m2
        m3 = x[j + 3] if x[j + 3] > m3 else m3
        m4 = x[j + 4] if x[j + 4] > m4 else m4
        m5 = x[j + 5] if x[j + 5] > m5 else m5
        m6 = x[j + 6] if x[j + 6] > m6 else m6
        m7 = x[j + 7] if x[j + 7] > m7 else m7
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(nb, n):
        m = x[j] if x[j] > m else m
    return m


# reassoc only: lets the sum vectorise, keeps inf/NaN semantics (no nnan/ninf).
@njit(cache=True, fastmath={"reassoc"})
def row_sum(x):
    """Sum of a 1-D array accumulated in float64."""
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j]
    return s


@njit(cache=True, fastmath={"reassoc"})
def _row_dot(x, y):
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return s


@njit(cache=True)
def _exp_shifted(x, m, out):
    for j in range(x.shape[0]):
        out[j] = vexp(x[j] - m)


@njit(cache=True)
def _softmax_row(x, out):
    _exp_shifted(x, row_max(x), out)
    inv = out.dtype.type(1.0 / row_sum(out))
    for j in range(x.shape[0]):
        out[j] *= inv


@njit(cache=True)
def _log_softmax_row(x, out):
    m = row_max(x)
    _exp_shifted(x, m, out)
    shift = out.dtype.type(m + np.log(row_sum(out)))
    for j in range(x.shape[0]):
        out[j] = x[j] - shift


@njit(cache=True)
def _softmax_backward_row(y, g, out):
    d = out.dtype.type(_row_dot(g, y))
    for j in range(y.shape[0]):
        out[j] = y[j] * (g[j] - d)


@njit(cache=True)
def _log_softmax_backward_row(y, g, out):
    s = out.dtype.type(row_sum(g))
    for j in range(y.shape[0]):
        out[j] = g[j] - vexp(y[j]) * s


# Each row kernel has a serial and a prange driver; numba compiles lazily, so a
# process only pays the (~3x dearer) parallel compile once it sees big inputs.

@njit(cache=True)
def _softmax_serial(x, out):
    for i in range(x.shape[0]):
        _softmax_row(x[i], out[i])


@njit(cache=True, parallel=True)
def _softmax_parallel(x, out):
    for i in prange(x.shape[0]):
        _softmax_row(x[i], out[i])


@njit(cache=True)
def _log_softmax_serial(x, out):
    for i in range(x.shape[0]):
        _log_softmax_row(x[i], out[i])


@njit(cache=True, parallel=True)
def _log_softmax_parallel(x, out):
    for i in prange(x.shape[0]):
        _log_softmax_row(x[i], out[i])


@njit(cache=True)
def _softmax_backward_serial(y, g, out):
    for i in range(y.shape[0]):
        _softmax_backward_row(y[i], g[i], out[i])


@njit(cache=True, parallel=True)
def _softmax_backward_parallel(y, g, out):
    for i in prange(y.shape[0]):
        _softmax_backward_row(y[i], g[i], out[i])


@njit(cache=True)
def _log_softmax_backward_serial(y, g, out):
    for i in range(y.shape[0]):
        _log_softmax_backward_row(y[i], g[i], out[i])


@njit(cache=True, parallel=True)
def _log_softmax_backward_parallel(y, g, out):
    for i in prange(y.shape[0]):
        _log_softmax_backward_row(y[i], g[i], out[i])


# An OpenMP launch costs ~2 us (blas.py); on 2 cores the fused cross-entropy ran
# 59 us serial vs 35 us parallel at 32k elements (128 x 256), 366 vs 159 at 256k.
PARALLEL_MIN_ELEMENTS = 1 << 14


def pick(serial, parallel, n_elements, min_elements=None):
    """The parallel driver for big inputs (min_elements, default PARALLEL_MIN_ELEMENTS) when numba has
    more than one thread, else the serial one."""
    threshold = PARALLEL_MIN_ELEMENTS if min_elements is None else min_elements
    if n_elements >= threshold and numba.get_num_threads() > 1:
        return parallel
    return serial


def as_rows(x):
    """C-contiguous (rows, last) view of x, copying only when x is not already C-contiguous."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1])


def check_float(x):
    """The kernels are compiled for float32 and float64 only."""
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"kernel needs float32 or float64 input, got {x.dtype}")


def _rowwise(serial, parallel, *arrays):
    arrays = [np.asarray(a) for a in arrays]
    check_float(arrays[0])
    shape = arrays[0].shape
    for a in arrays[1:]:
        if a.shape != shape or a.dtype != arrays[0].dtype:
            raise ValueError(f"operands differ: {shape} {arrays[0].dtype} vs {a.shape} {a.dtype}")
    if arrays[0].size == 0:
        return np.empty(shape, arrays[0].dtype)
    rows = [as_rows(a) for a in arrays]
    out = np.empty(rows[0].shape, rows[0].dtype)
    pick(serial, parallel, out.size)(*rows, out)
    return out.reshape(shape)


def softmax(x):
    """Numba twin of softmax_reference."""
    return _rowwise(_softmax_serial, _softmax_parallel, x)


def softmax_backward(y, grad):
    """Numba twin of softmax_backward_reference."""
    return _rowwise(_softmax_backward_serial, _softmax_backward_parallel, y, grad)


def log_softmax(x):
    """Numba twin of log_softmax_reference."""
    return _rowwise(_log_softmax_serial, _log_softmax_parallel, x)


def log_softmax_backward(y, grad):
    """Numba twin of log_softmax_backward_reference."""
    return _rowwise(_log_softmax_backward_serial, _log_softmax_backward_parallel, y, grad)
