"""Muon (MomentUm Orthogonalized by Newton-Schulz) for minigrad, following Karpathy's nanochat.

SGD-momentum (optionally Nesterov) whose 2-D update is replaced by an approximately orthogonal
matrix computed with a quintic Newton-Schulz iteration, then scaled by sqrt(max(1, rows/cols)).
nanochat runs the iteration in bfloat16 on the GPU; NumPy has no bfloat16 matmul, so here it
runs in float32, which is at least as accurate.
"""
from __future__ import annotations

import numpy as np

from minigrad.kernels import momentum_update

from .optimizer import Optimizer

# Quintic coefficients chosen to maximise the slope at zero (Keller Jordan / modded-nanogpt).
_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# The iteration's products: np.matmul, since minigrad's matmul kernel measured no faster on these
# small square products. Re-measure: python benchmarks/bench_thresholds.py muon_newton_schulz
_matmul = np.matmul


def zeropower_via_newtonschulz5(G: np.ndarray, steps: int = 5) -> np.ndarray:
    """Approximately orthogonalise ``G`` (..., m, n): returns ~U S' V^T with S' in roughly [0.7, 1.2].

    Works on the wide orientation (transposing when rows > cols) so ``X @ X.T`` is the small Gram matrix.
    """
    if G.ndim < 2:
        raise ValueError(f"Newton-Schulz needs a matrix, got shape {G.shape}")
    a, b, c = _NS_COEFFS
    X = np.asarray(G, dtype=np.float32)
    tall = G.shape[-2] > G.shape[-1]
    if tall:
        X = np.swapaxes(X, -2, -1)
    # Dividing by the Frobenius norm bounds the spectral norm by 1, inside the iteration's basin.
    norm = np.sqrt(np.sum(np.square(X), axis=(-2, -1), keepdims=True))
    X = X / (norm + np.float32(1e-7))
    for _ in range(steps):
        A = _matmul(X, np.swapaxes(X, -2, -1))
        B = b * A + c * _matmul(A, A)
        X = a * X + _matmul(B, X)
    if tall:
        X = np.swapaxes(X, -2, -1)
    return np.ascontiguousarray(X)


class Muon(Optimizer):
    """Muon for 2-D parameters only; use AdamW for embeddings, the LM head and 0/1-D parameters.

    lr is the learning rate of the inner SGD; momentum its coefficient (nanochat warms it from 0.85 to
    0.95, see nanochat.schedule.muon_momentum); nesterov (recommended) uses Nesterov momentum;
    ns_steps counts the Newton-Schulz iterations."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum: {momentum}")
        if int(ns_steps) != ns_steps or ns_steps < 1:
            raise ValueError(f"ns_steps must be a positive integer, got {ns_steps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=int(ns_steps)))

    def add_param_group(self, param_group: dict) -> None:
        """As Optimizer.add_param_group, rejecting any group with a non-2-D parameter."""
        super().add_param_group(param_group)
        bad = [p.data.shape for p in self.param_groups[-1]["params"] if p.data.ndim != 2]
        if bad:
            self.param_groups.pop()
            raise ValueError(f"Muon only optimizes 2-D parameters; got shapes {bad}")

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), float(group["momentum"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state.setdefault(p, {})
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = np.zeros_like(p.data)
                # buf <- lerp(buf, g, 1 - momentum), then lerp(g, buf, momentum) for Nesterov, in one
                # sweep; nanochat lerps p.grad in place, a fresh array leaves the caller's gradient intact.
                update = momentum_update(state["momentum_buffer"], g, momentum, group["nesterov"])
                update = zeropower_via_newtonschulz5(update, steps=group["ns_steps"])
                rows, cols = p.data.shape
                scale = max(1.0, rows / cols) ** 0.5
                p.data -= (lr * scale) * update.astype(p.data.dtype, copy=False)
        return loss
