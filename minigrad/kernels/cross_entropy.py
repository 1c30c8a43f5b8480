"""Fused per-row cross-entropy (negative log-likelihood of logits) and its gradient (NumPy twins)."""
import numpy as np


def _check_ce(logits, targets, ignore_index):
    """Validate shapes and that every non-ignored target is a valid class index."""
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, V), got {logits.shape}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(
            f"cross_entropy targets must have shape ({logits.shape[0]},), got {targets.shape}"
        )
    n_classes = logits.shape[1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"cross_entropy target {int(targets[i])} at row {i} is outside [0, {n_classes}) "
            f"and is not ignore_index={ignore_index}"
        )


def cross_entropy_forward_reference(logits, targets, ignore_index=-1):
    """Per-row losses (0 on ignored rows) and the row log-sum-exp saved for backward."""
    _check_ce(logits, targets, ignore_index)
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    keep = targets != ignore_index
    safe = np.where(keep, targets, 0)
    picked = logits[np.arange(logits.shape[0]), safe]
    losses = np.where(keep, lse - picked, 0)
    return losses, lse


def cross_entropy_backward_reference(logits, targets, lse, grad_losses, ignore_index=-1):
    """grad_logits[i] = grad_losses[i] * (softmax(logits[i]) - onehot(targets[i])); ignored rows 0."""
    _check_ce(logits, targets, ignore_index)
    keep = targets != ignore_index
    grad = np.exp(logits - lse[:, None])
    rows = np.flatnonzero(keep)
    grad[rows, targets[rows]] -= 1
    grad *= grad_losses.astype(logits.dtype)[:, None]
    grad[~keep] = 0  # explicit zero: a NaN grad_loss or lse on an ignored row must not leak
    return grad


# Interim: the fast names point at the twins until the numba kernels are committed.
cross_entropy_forward = cross_entropy_forward_reference
cross_entropy_backward = cross_entropy_backward_reference
