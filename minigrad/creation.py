"""Tensor factories and the seedable random generator behind randn/rand."""
import numpy as np

from minigrad.tensor import Tensor, result_type

_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator that randn and rand draw from, so a run can be reproduced."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    return _generator


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def tensor(data, requires_grad=False, dtype=None):
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=np.float32, requires_grad=False):
    return Tensor(np.zeros(_shape(shape), dtype), requires_grad=requires_grad)


def ones(*shape, dtype=np.float32, requires_grad=False):
    return Tensor(np.ones(_shape(shape), dtype), requires_grad=requires_grad)


def full(shape, fill_value, dtype=None, requires_grad=False):
    """dtype defaults to the fill value's, as in PyTorch: bool, int64 or float32."""
    return Tensor(np.full(_shape((shape,)), fill_value, dtype or result_type(fill_value)), requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(np.zeros(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return Tensor(np.ones(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    values = np.arange(start, end, step)
    if dtype is None and values.dtype == np.float64:
        dtype = np.float32
    return Tensor(values, dtype=dtype, requires_grad=requires_grad)


def randn(*shape, dtype=np.float32, requires_grad=False, generator=None):
    rng = generator or _generator
    return Tensor(rng.standard_normal(_shape(shape)).astype(dtype), requires_grad=requires_grad)


def rand(*shape, dtype=np.float32, requires_grad=False, generator=None):
    rng = generator or _generator
    return Tensor(rng.random(_shape(shape)).astype(dtype), requires_grad=requires_grad)
