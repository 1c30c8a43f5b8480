"""The error function, which NumPy lacks: a numba loop over math.erf, and its NumPy twin."""
import math

import numpy as np
from numba import njit

from ._common import compiled

_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def erf_reference(x):
    return _erf_scalar(x).astype(x.dtype)


@njit(cache=True, error_model="numpy")
def _erf_flat(x, out):
    for i in range(x.shape[0]):
        out[i] = math.erf(np.float64(x[i]))  # in float64, rounded once, as the twin


def erf(x):
    """Numba twin of erf_reference (float32 and float64; other dtypes take the twin)."""
    if not compiled(x):
        return erf_reference(x)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    _erf_flat(flat, out)
    return out.reshape(x.shape)
