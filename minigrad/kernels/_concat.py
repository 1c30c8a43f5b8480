"""Concatenation along any axis: np.concatenate, which is already a strided copy per input (a numba
copy kernel lost to it), behind a stricter check: mixed dtypes raise instead of silently upcasting.
"""
import numpy as np


def concat_reference(arrays, axis):
    """Same as np.concatenate(arrays, axis)."""
    return np.concatenate(arrays, axis=axis)


def concat(arrays, axis):
    """Concatenate same-dtype arrays of any strides along `axis` (negative allowed)."""
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("concat needs at least one array")
    dtype = arrays[0].dtype
    for a in arrays[1:]:
        if a.dtype != dtype:
            raise ValueError(f"concat arrays must share a dtype, got {dtype} and {a.dtype}")
    return np.concatenate(arrays, axis=axis)
