"""Numerical-stability checks for Tensors and ndarrays: NaN/Inf detection, overflow and underflow."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def _array(x) -> np.ndarray:
    # ndarray.data is a memoryview, so only unwrap non-arrays (Tensors).
    return x if isinstance(x, np.ndarray) else np.asarray(getattr(x, "data", x))


def _bound(value: float, what: str) -> float:
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative number, got {value}")
    return value


def has_nan(x) -> bool:
    a = _array(x)
    # Integer and bool arrays cannot hold NaN or Inf.
    return bool(np.issubdtype(a.dtype, np.inexact) and np.isnan(a).any())


def has_inf(x) -> bool:
    a = _array(x)
    return bool(np.issubdtype(a.dtype, np.inexact) and np.isinf(a).any())


def check_overflow(x, max_value: float) -> bool:
    """True when any |value| exceeds ``max_value`` (Inf counts; NaN does not)."""
    return bool((np.abs(_array(x)) > _bound(max_value, "max_value")).any())


def check_underflow(x, min_value: float) -> bool:
    """True when any nonzero value has magnitude below ``min_value`` (it may flush to zero)."""
    mag = np.abs(_array(x))
    return bool(((mag != 0) & (mag < _bound(min_value, "min_value"))).any())


def validate_tensor(x, name: str) -> None:
    """Raise ValueError naming ``name`` with its NaN and Inf counts if any value is non-finite."""
    a = _array(x)
    if not np.issubdtype(a.dtype, np.inexact):
        return
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"tensor {name!r} (shape {a.shape}, dtype {a.dtype}) has {n_nan} NaN and {n_inf} Inf "
            f"value(s) out of {a.size}"
        )


def first_nonfinite(named_arrays: Iterable) -> str | None:
    """Name of the first (name, array) pair holding a NaN or Inf, or None when all are finite."""
    for name, x in named_arrays:
        a = _array(x)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            return name
    return None
