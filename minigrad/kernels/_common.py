"""Pieces every numba kernel shares: a vectorisable exp, row reductions, and the rules for
choosing a driver (serial or parallel) and a path (compiled loop or NumPy twin).

numba has no SIMD exp without Intel SVML, so `vexp` is a vectorisable exp (Cody-Waite reduction,
polynomial, exponent bits). Row max and row sums use explicit lanes or reassociation so that LLVM
vectorises them without fastmath flags that would change inf/NaN behaviour. Row sums accumulate in
float64, so float32 results are at least as accurate as NumPy's float32 pairwise sums.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def compiled(*arrays):
    """True when every array has a dtype the numba kernels are compiled for (float32, float64);
    a public kernel hands any other input to its NumPy twin."""
    return all(np.asarray(a).dtype in COMPILED_DTYPES for a in arrays)


def pick(serial, parallel, n_elements, min_elements):
    """The parallel driver from min_elements (each kernel's own tuned threshold) when numba has more
    than one thread, else the serial one."""
    if n_elements >= min_elements and numba.get_num_threads() > 1:
        return parallel
    return serial


def as_rows(x):
    """C-contiguous (rows, last) view of x, copying only when x is not already C-contiguous."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1])


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


@njit(cache=True, error_model="numpy", inline="always")
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


@njit(cache=True, error_model="numpy", inline="always")
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


def as_float32(v):
    """A weight element as float32 inside kernels: bfloat16 patterns (uint16, the top half of a
    float32) widened by a shift and a bit-cast, float32 as it is."""
    v = np.asarray(v)
    return (v.astype(np.uint32) << np.uint32(16)).view(np.float32) if v.dtype == np.uint16 else v.astype(np.float32)


@overload(as_float32, inline="always")
def _as_float32_overload(v):
    if v == types.uint16:
        return lambda v: _i32_as_f32(np.int32(np.uint32(v) << np.uint32(16)))
    return lambda v: v


@njit(cache=True, error_model="numpy")
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
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def row_sum(x):
    """Sum of a 1-D array accumulated in float64."""
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j]
    return s


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def row_dot(x, y):
    """Dot product of two 1-D arrays accumulated in float64."""
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return s


@njit(cache=True, error_model="numpy")
def exp_shifted(x, m, out):
    """out = exp(x - m), elementwise."""
    for j in range(x.shape[0]):
        out[j] = vexp(x[j] - m)
