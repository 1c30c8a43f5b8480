"""minigrad: a from-scratch reverse-mode autograd engine on NumPy, with numba kernels as its hot core."""
from minigrad._tensor import Tensor, Function, no_grad, enable_grad, is_grad_enabled, cat, stack, where
from minigrad._creation import (tensor, zeros, ones, full, zeros_like, ones_like, arange, randn, rand,
                                manual_seed, default_generator)
from minigrad._gradcheck import gradcheck, GradcheckError
from minigrad import kernels, nn, optim, stability
from minigrad.serialization import save, load

from numpy import float16, float32, float64, int32, int64, bool_  # dtypes, under PyTorch's names

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "cat", "stack", "where",
    "tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "arange", "randn", "rand",
    "manual_seed", "default_generator", "gradcheck", "GradcheckError",
    "kernels", "nn", "optim", "stability", "save", "load",
    "float16", "float32", "float64", "int32", "int64", "bool_",
]
