"""bfloat16 weights for inference: NumPy has no bfloat16, so a weight is kept as its raw 16-bit
patterns (uint16, the top half of a float32) and widened inside the kernels, which accumulate in
float32. Half the memory and half the weight traffic of float32; a decoding step, which streams
every weight once per token, is bound by that traffic.

`linear_bf16(x, w)` is x (..., K) float32 @ w (N, K) bfloat16 .T -> (..., N) float32:
- a few rows (decoding): matmul's rows_by_weight_t, one pass over w, rows of w split over numba's
  threads, each weight widened in a register (shift and bit-cast) on its way into float32 sums;
- many rows (a prompt's prefill): w is widened a band of rows at a time into a float32 scratch
  buffer and multiplied by BLAS, so no float32 copy of the whole weight ever exists.
"""
import numba
import numpy as np
from numba import njit, prange

from . import _blas as blas
from ._matmul import STREAMED_ROWS, rows_by_weight_t

BAND_ROWS = 256  # rows of w widened per BLAS call in the many-rows path (256 x 4096 floats = 4 MB)


def float32_to_bfloat16(x):
    """float32 array -> uint16 bfloat16 patterns, rounded to nearest even (as torch rounds);
    NaN stays NaN (a quiet NaN of the same sign)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, (bits >> 16) | np.uint32(0x0040), rounded).astype(np.uint16)


def bfloat16_to_float32(bits):
    """uint16 bfloat16 patterns -> float32 (exact: bfloat16 is a truncated float32)."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"bfloat16 patterns must be uint16, got {bits.dtype}")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _check(x, w):
    if w.dtype != np.uint16 or w.ndim != 2:
        raise ValueError(f"linear_bf16 needs a 2-D uint16 (bfloat16) weight, got {w.dtype} {w.shape}")
    if x.dtype != np.float32 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear_bf16 needs float32 x (..., {w.shape[1]}), got {x.dtype} {x.shape}")


def linear_bf16_reference(x, w):
    """NumPy twin: widen the whole weight, then one float32 matmul."""
    _check(x, w)
    return np.matmul(x, bfloat16_to_float32(w).T)


@njit(cache=True, error_model="numpy", parallel=True)
def _gemm_bf16(address, x, w, out, band):
    """out (M, N) = x (M, K) @ widen(w).T: bands of `band` rows of w, each widened into a float32
    scratch buffer and multiplied by one single-threaded BLAS call writing out[:, band]."""
    m, k = x.shape
    n = w.shape[0]
    n_bands = (n + band - 1) // band
    for b in prange(n_bands):
        s = b * band
        e = min(n, s + band)
        scratch = np.empty((e - s, k), np.float32)
        scratch.view(np.uint32)[:] = w[s:e].astype(np.uint32) << np.uint32(16)
        blas.gemm(address, blas.NO_TRANS, blas.TRANS, m, e - s, k, np.float32(1.0), x.ctypes.data, k,
                  scratch.ctypes.data, k, np.float32(0.0), out[:, s:].ctypes.data, n)


def linear_bf16(x, w):
    """Fast path of linear_bf16_reference (same values up to float32 summation order)."""
    _check(x, w)
    lead = x.shape[:-1]
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    w = np.ascontiguousarray(w)
    out = np.empty((x2.shape[0], w.shape[0]), np.float32)
    if x2.shape[0] == 0 or w.shape[0] == 0:
        return out.reshape(lead + (w.shape[0],))
    address = blas.ADDRESS.get(("gemm", np.dtype(np.float32)))
    if x2.shape[0] <= STREAMED_ROWS or address is None:
        rows_by_weight_t(x2, w, out, numba.get_num_threads())
    else:
        _gemm_bf16(address, x2, w, out, BAND_ROWS)
    return out.reshape(lead + (w.shape[0],))


def embedding_bf16(idx, w):
    """Rows `idx` of a bfloat16 table, widened to float32."""
    return bfloat16_to_float32(w[idx])
