"""Layers with parameters, initialised as PyTorch initialises them."""
import numpy as np

from minigrad._creation import default_generator
from minigrad.nn import functional as F
from minigrad.nn.module import Module, Parameter


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, generator=None):
        rng, bound = generator or default_generator(), 1 / np.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, out_features).astype(dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, generator=None):
        rng = generator or default_generator()
        self.weight = Parameter(rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype))

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
