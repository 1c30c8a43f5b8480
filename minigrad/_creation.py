"""Tensor factories and the seedable random generator behind randn/rand."""
import numpy as np

from minigrad._tensor import Tensor, result_type

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


def full(shape, fill_value, dtype=None, requires_grad=False):
    """dtype defaults to the fill value's, as in PyTorch: bool, int64 or float32."""
    return Tensor(np.full(_shape((shape,)), fill_value, dtype or result_type(fill_value)), requires_grad=requires_grad)


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


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad)


def empty(*shape, dtype=np.float32, requires_grad=False):
    """Zero-filled (NumPy's uninitialised memory would make results depend on chance)."""
    return zeros(*shape, dtype=dtype, requires_grad=requires_grad)


def eye(n, m=None, dtype=np.float32, requires_grad=False):
    return Tensor(np.eye(n, m, dtype=dtype), requires_grad=requires_grad)


def linspace(start, end, steps, dtype=np.float32, requires_grad=False):
    return Tensor(np.linspace(start, end, steps).astype(dtype), requires_grad=requires_grad)


def randint(low, high=None, size=None, dtype=np.int64, generator=None):
    """randint(high, size) or randint(low, high, size), as torch.randint: integers in [low, high)."""
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    return Tensor((generator or _generator).integers(low, high, _shape((size,))).astype(dtype))


def randn_like(t, dtype=None, generator=None):
    return randn(*t.shape, dtype=dtype or t.dtype, generator=generator)


def rand_like(t, dtype=None, generator=None):
    return rand(*t.shape, dtype=dtype or t.dtype, generator=generator)


def meshgrid(*tensors, indexing="ij"):
    """Grids from 1-D tensors, as torch.meshgrid (indexing 'ij' or 'xy'); differentiable (expanded views)."""
    tensors = tensors[0] if len(tensors) == 1 and isinstance(tensors[0], (tuple, list)) else tensors
    if indexing not in ("ij", "xy"):
        raise ValueError(f"indexing must be 'ij' or 'xy', got {indexing!r}")
    shape = [t.numel() for t in tensors]
    if indexing == "xy" and len(shape) >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    grids = []
    for i, t in enumerate(tensors):
        axis = {0: 1, 1: 0}.get(i, i) if indexing == "xy" and len(shape) >= 2 else i
        view = [1] * len(shape)
        view[axis] = -1
        grids.append(t.reshape(view).expand(shape))
    return tuple(grids)
