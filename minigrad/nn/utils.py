"""Gradient utilities for minigrad parameters."""
from __future__ import annotations

import math

import numpy as np


def _grads(parameters) -> list[np.ndarray]:
    if isinstance(getattr(parameters, "data", None), np.ndarray):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale gradients in place so their combined norm is at most ``max_norm``; return the norm before clipping.

    Same formula as torch.nn.utils.clip_grad_norm_: ``clip_coef = max_norm / (total_norm + 1e-6)``,
    applied only when it is below 1. A non-finite total norm is returned as is and, unlike
    PyTorch (which multiplies by NaN or 0), the gradients are left untouched so the caller can
    inspect them and skip the step.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be positive, got {norm_type}")
    if not max_norm >= 0:  # a negative bound would flip every gradient's sign
        raise ValueError(f"max_norm must be non-negative, got {max_norm}")
    grads = _grads(parameters)
    if not grads:
        return 0.0
    # Accumulate in float64, as PyTorch's CPU reductions do for float32 inputs.
    if math.isinf(norm_type):
        # np.max propagates NaN (Python's max() would not).
        total = float(np.max([np.max(np.abs(g)) if g.size else 0.0 for g in grads]))
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    else:
        total = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads) ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({total})")
        return total
    clip_coef = max_norm / (total + 1e-6)
    if clip_coef < 1.0:
        for g in grads:
            g *= clip_coef
    return total
