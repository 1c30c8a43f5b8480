"""Layers with parameters, initialised as PyTorch initialises them."""
import contextlib

import numpy as np

from minigrad.creation import default_generator
from minigrad.nn import functional as F
from minigrad.nn.module import Module, Parameter


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
