"""Tensor factories and the seedable random generator behind randn/rand."""
import numpy as np

from minigrad._tensor import Tensor

_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator that randn and rand draw from, so a run can be reproduced."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    """The generator that randn and rand draw from when given none."""
    return _generator


def _shape(shape):
    """Shape given as f(2, 3) or f((2, 3)) -> (2, 3)."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def tensor(data, requires_grad=False, dtype=None):
    """A Tensor of data (Python floats become float32, as in PyTorch)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=np.float32, requires_grad=False):
    """A tensor of zeros; the shape as separate sizes or one tuple."""
    return Tensor(np.zeros(_shape(shape), dtype), requires_grad=requires_grad)


def ones(*shape, dtype=np.float32, requires_grad=False):
    """A tensor of ones; the shape as separate sizes or one tuple."""
    return Tensor(np.ones(_shape(shape), dtype), requires_grad=requires_grad)


def full(shape, fill_value, dtype=np.float32, requires_grad=False):
    """A tensor of shape filled with fill_value."""
    return Tensor(np.full(_shape((shape,)), fill_value, dtype), requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    """Zeros of t's shape, in t's dtype unless dtype is given."""
    return Tensor(np.zeros(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    """Ones of t's shape, in t's dtype unless dtype is given."""
    return Tensor(np.ones(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    """Values from start (0 when only one bound is given) up to end, step apart; floats become float32."""
    if end is None:
        start, end = 0, start
    values = np.arange(start, end, step)
    if dtype is None and values.dtype == np.float64:
        dtype = np.float32
    return Tensor(values, dtype=dtype, requires_grad=requires_grad)


def randn(*shape, dtype=np.float32, requires_grad=False, generator=None):
    """Standard normal samples from generator (default: the one manual_seed seeds)."""
    rng = generator or _generator
    return Tensor(rng.standard_normal(_shape(shape)).astype(dtype), requires_grad=requires_grad)


def rand(*shape, dtype=np.float32, requires_grad=False, generator=None):
    """Uniform samples in [0, 1) from generator (default: the one manual_seed seeds)."""
    rng = generator or _generator
    return Tensor(rng.random(_shape(shape)).astype(dtype), requires_grad=requires_grad)
