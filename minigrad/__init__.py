"""minigrad: a from-scratch reverse-mode autograd engine on NumPy, with numba kernels as its hot core."""
from minigrad._tensor import (Tensor, Function, no_grad, enable_grad, is_grad_enabled, cat, stack, where,
                              result_type, promote_types)
from minigrad._creation import (tensor, zeros, ones, full, zeros_like, ones_like, arange, randn, rand,
                                manual_seed, default_generator, full_like, empty, eye, linspace, randint,
                                randn_like, rand_like, meshgrid)
from minigrad._methods import einsum, maximum, minimum
from minigrad._gradcheck import gradcheck, GradcheckError
from minigrad import kernels, nn, optim, stability
from minigrad.serialization import save, load

from numpy import float16, float32, float64, int8, int16, int32, int64, uint8, bool_  # dtypes, under PyTorch's names

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "cat", "stack", "where",
    "result_type", "promote_types",
    "tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "arange", "randn", "rand",
    "manual_seed", "default_generator", "full_like", "empty", "eye", "linspace", "randint",
    "randn_like", "rand_like", "meshgrid", "einsum", "maximum", "minimum",
    "gradcheck", "GradcheckError",
    "kernels", "nn", "optim", "stability", "save", "load",
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_",
]
