"""Fused per-row cross-entropy (negative log-likelihood of logits) and its gradient.

The numba forward makes one sweep per row (max, exp into a row-sized scratch,
sum, pick the target) and keeps only the row log-sum-exp for backward; no
(N, V) log-softmax matrix is ever built. The backward writes
g * (softmax - onehot) directly, without a one-hot matrix.
"""
import numpy as np
from numba import njit, prange

from .softmax import _exp_shifted, as_rows, check_float, pick, row_max, row_sum, vexp


def _check_ce(logits, targets, ignore_index):
    """Validate shapes and that every non-ignored target is a valid class index."""
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, V), got {logits.shape}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(
            f"cross_entropy targets must have shape ({logits.shape[0]},), got {targets.shape}"
        )
    n_classes = logits.shape[1]
    if n_classes == 0:
        raise ValueError("cross_entropy needs at least one class (V >= 1)")
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



@njit(cache=True)
def _scaled_exp_shifted(x, shift, scale, out):
    for j in range(x.shape[0]):
        out[j] = scale * vexp(x[j] - shift)


@njit(cache=True)
def _ce_forward_row(row, t, ignore_index, losses, lse, i):
    m = row_max(row)
    scratch = np.empty(row.shape[0], row.dtype)
    _exp_shifted(row, m, scratch)
    l = m + np.log(row_sum(scratch))
    lse[i] = l
    losses[i] = 0.0 if t == ignore_index else l - row[t]


@njit(cache=True)
def _ce_backward_row(row, t, lse, g, ignore_index, out):
    if t == ignore_index:
        out[:] = 0
    else:
        _scaled_exp_shifted(row, lse, g, out)
        out[t] -= g


@njit(cache=True)
def _ce_forward_serial(logits, targets, ignore_index, losses, lse):
    for i in range(logits.shape[0]):
        _ce_forward_row(logits[i], targets[i], ignore_index, losses, lse, i)


@njit(cache=True, parallel=True)
def _ce_forward_parallel(logits, targets, ignore_index, losses, lse):
    for i in prange(logits.shape[0]):
        _ce_forward_row(logits[i], targets[i], ignore_index, losses, lse, i)


@njit(cache=True)
def _ce_backward_serial(logits, targets, lse, grad_losses, ignore_index, out):
    for i in range(logits.shape[0]):
        _ce_backward_row(logits[i], targets[i], lse[i], grad_losses[i], ignore_index, out[i])


@njit(cache=True, parallel=True)
def _ce_backward_parallel(logits, targets, lse, grad_losses, ignore_index, out):
    for i in prange(logits.shape[0]):
        _ce_backward_row(logits[i], targets[i], lse[i], grad_losses[i], ignore_index, out[i])


def _prepare(logits, targets, ignore_index):
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    check_float(logits)
    _check_ce(logits, targets, ignore_index)
    return as_rows(logits), np.ascontiguousarray(targets, dtype=np.int64)


def cross_entropy_forward(logits, targets, ignore_index=-1):
    """Numba twin of cross_entropy_forward_reference."""
    logits, targets = _prepare(logits, targets, ignore_index)
    losses = np.empty(logits.shape[0], logits.dtype)
    lse = np.empty(logits.shape[0], logits.dtype)
    kernel = pick(_ce_forward_serial, _ce_forward_parallel, logits.size)
    kernel(logits, targets, np.int64(ignore_index), losses, lse)
    return losses, lse


def cross_entropy_backward(logits, targets, lse, grad_losses, ignore_index=-1):
    """Numba twin of cross_entropy_backward_reference."""
    logits, targets = _prepare(logits, targets, ignore_index)
    n = logits.shape[0]
    lse = np.ascontiguousarray(lse, dtype=logits.dtype)
    grad_losses = np.ascontiguousarray(grad_losses, dtype=logits.dtype)
    if lse.shape != (n,) or grad_losses.shape != (n,):
        raise ValueError(
            f"cross_entropy_backward needs lse and grad_losses of shape ({n},), "
            f"got {lse.shape} and {grad_losses.shape}"
        )
    out = np.empty(logits.shape, logits.dtype)
    kernel = pick(_ce_backward_serial, _ce_backward_parallel, logits.size)
    kernel(logits, targets, lse, grad_losses, np.int64(ignore_index), out)
    return out
