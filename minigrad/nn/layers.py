"""Layers with parameters, initialised as PyTorch initialises them."""
import contextlib

import numpy as np

from minigrad._creation import default_generator
from minigrad.nn import functional as F
from minigrad.nn.module import Buffer, Module, Parameter


_skipping_init = False


@contextlib.contextmanager
def skip_init():
    """Layers built inside allocate their parameters without drawing values (as torch's meta device
    spares them), for a caller that overwrites every one with loaded weights: drawing half a billion
    random numbers takes longer than reading them from disk."""
    global _skipping_init
    previous, _skipping_init = _skipping_init, True
    try:
        yield
    finally:
        _skipping_init = previous


def init_skipped():
    return _skipping_init


def _uniform(rng, bound, shape, dtype):
    return np.empty(shape, dtype) if _skipping_init else rng.uniform(-bound, bound, shape).astype(dtype)


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, generator=None):
        rng, bound = generator or default_generator(), 1 / np.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_uniform(rng, bound, (out_features, in_features), dtype))
        self.bias = Parameter(_uniform(rng, bound, out_features, dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, generator=None):
        rng, shape = generator or default_generator(), (num_embeddings, embedding_dim)
        self.weight = Parameter(np.empty(shape, dtype) if _skipping_init else rng.standard_normal(shape).astype(dtype))

    def forward(self, idx):
        return F.embedding(idx, self.weight)


class RMSNorm(Module):
    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        self.eps = eps
        self.weight = Parameter(np.ones(normalized_shape, dtype)) if elementwise_affine else None

    def forward(self, x):
        return F.rms_norm(x, weight=self.weight, eps=self.eps)


class Dropout(Module):
    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class Conv2d(Module):
    """weight (out, in/groups, kh, kw) and bias (out,), initialised as PyTorch (uniform in ±1/sqrt(fan_in))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, dtype=np.float32, generator=None):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must divide by "
                             f"groups {groups}")
        kernel = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
        rng = generator or default_generator()
        bound = 1 / np.sqrt(in_channels // groups * kernel[0] * kernel[1])
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        shape = (out_channels, in_channels // groups) + kernel
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, out_channels).astype(dtype)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _BatchNorm(Module):
    """Running statistics as buffers (running_mean, running_var, num_batches_tracked: PyTorch's names);
    the batch's statistics in train mode, the running ones in eval mode."""
    spatial_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32):
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        if track_running_stats:
            self.running_mean = Buffer(np.zeros(num_features, dtype))
            self.running_var = Buffer(np.ones(num_features, dtype))
            self.num_batches_tracked = Buffer(np.zeros((), np.int64))
        else:
            self.running_mean = self.running_var = None

    def forward(self, x):
        if x.ndim - 2 not in self.spatial_dims:
            raise RuntimeError(f"{type(self).__name__} got input of shape {x.shape}")
        use_batch = self.training or self.running_mean is None
        if self.training and self.running_mean is not None:
            self.num_batches_tracked.data += 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                            self.momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    spatial_dims = (0, 1)  # (N, C) or (N, C, L)


class BatchNorm2d(_BatchNorm):
    spatial_dims = (2,)  # (N, C, H, W)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class GroupNorm(Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32):
        if num_channels % num_groups:
            raise ValueError(f"num_channels {num_channels} must divide by num_groups {num_groups}")
        self.num_groups, self.eps = num_groups, eps
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine else None

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
