"""Fused per-row cross-entropy (negative log-likelihood of logits) and its gradient.

The numba forward makes one sweep per row (max, exp into a row-sized scratch,
sum, pick the target) and keeps only the row log-sum-exp for backward; no
(N, V) log-softmax matrix is ever built. The backward writes
g * (softmax - onehot) directly, without a one-hot matrix. An optional softcap
(z = softcap * tanh(logits / softcap), nanochat's logit cap) is applied row by row inside
the forward sweep; the caller may keep the capped logits (one (N, V) array, as PyTorch's tanh
keeps its output) so that backward needs no second tanh sweep. Logits of dtypes other than
float32/float64 take the NumPy twins.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._common import as_rows, compiled, exp_shifted, pick, row_max, row_sum, vexp

# Parallel drivers from this many logits. Re-measure: python benchmarks/bench_thresholds.py cross_entropy
CROSS_ENTROPY_PARALLEL_MIN = 1 << 14


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


def _softcapped(logits, softcap):
    cap = logits.dtype.type(softcap)
    return cap * np.tanh(logits / cap)


def cross_entropy_forward_reference(logits, targets, ignore_index=-1, softcap=None):
    """Per-row losses (0 on ignored rows) and the row log-sum-exp saved for backward. With a softcap,
    the logits are first squashed to softcap * tanh(logits / softcap)."""
    _check_ce(logits, targets, ignore_index)
    if softcap is not None:
        logits = _softcapped(logits, softcap)
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    keep = targets != ignore_index
    safe = np.where(keep, targets, 0)
    picked = logits[np.arange(logits.shape[0]), safe]
    losses = np.where(keep, lse - picked, 0)
    return losses, lse


def cross_entropy_backward_reference(logits, targets, lse, grad_losses, ignore_index=-1, softcap=None):
    """grad_logits[i] = grad_losses[i] * (softmax(logits[i]) - onehot(targets[i])); ignored rows 0.
    With a softcap, through z = softcap * tanh(logits / softcap): times dz/dlogits = 1 - tanh²."""
    _check_ce(logits, targets, ignore_index)
    keep = targets != ignore_index
    squash = None
    if softcap is not None:
        cap = logits.dtype.type(softcap)
        t = np.tanh(logits / cap)
        logits, squash = cap * t, 1 - t * t
    grad = np.exp(logits - lse[:, None])
    rows = np.flatnonzero(keep)
    grad[rows, targets[rows]] -= 1
    grad *= grad_losses.astype(logits.dtype)[:, None]
    if squash is not None:
        grad *= squash
    grad[~keep] = 0  # explicit zero: a NaN grad_loss or lse on an ignored row must not leak
    return grad



@njit(cache=True, error_model="numpy")
def _scaled_exp_shifted(x, shift, scale, out):
    for j in range(x.shape[0]):
        out[j] = scale * vexp(x[j] - shift)


@njit(cache=True, error_model="numpy")
def _tanh32(x):
    """float32 tanh within a few ulp of np.tanh (cephes tanhf), which LLVM inlines and vectorises,
    unlike a call to libm's tanhf per element."""
    a = abs(x)
    if a > np.float32(0.625):
        e = vexp(a + a)  # inf for large a, then 2 / inf = 0 and the result is exactly +-1
        t = np.float32(1.0) - np.float32(2.0) / (e + np.float32(1.0))
        return t if x > 0 else -t
    z = x * x
    p = np.float32(-5.70498872745e-3)
    p = p * z + np.float32(2.06390887954e-2)
    p = p * z - np.float32(5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z - np.float32(3.33332819422e-1)
    return p * z * x + x  # NaN stays NaN


def vtanh(x):
    """Scalar tanh inside kernels: _tanh32 for float32, libm's for float64."""
    return np.tanh(x)


@overload(vtanh)
def _vtanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: np.tanh(x)


@njit(cache=True, error_model="numpy")
def _softcap_row(row, cap, out):
    """out = cap * tanh(row / cap); cap <= 0 means no softcap (a copy)."""
    if cap > 0:
        inv = row.dtype.type(1.0) / cap
        for j in range(row.shape[0]):
            out[j] = cap * vtanh(row[j] * inv)
    else:
        for j in range(row.shape[0]):  # not out[:] = row: its shape check compiles numba's string formatting (~5 s)
            out[j] = row[j]


@njit(cache=True, error_model="numpy")
def _ce_forward_row(row, t, ignore_index, cap, capped, losses, lse, i):
    if cap > 0:  # squash into the caller's (N, V) capped array when it keeps one, else a row scratch
        z = capped[i] if capped.shape[0] > 0 else np.empty(row.shape[0], row.dtype)
        _softcap_row(row, cap, z)
    else:
        z = row
    m = row_max(z)
    scratch = np.empty(row.shape[0], row.dtype)
    exp_shifted(z, m, scratch)
    l = m + np.log(row_sum(scratch))
    lse[i] = l
    losses[i] = 0.0 if t == ignore_index else l - z[t]


@njit(cache=True, error_model="numpy")
def _capped_grad_row(z, lse, g, inv, out):
    # z = cap tanh(row / cap) from the forward: d loss / d row = g softmax(z) (1 - tanh²)
    for j in range(z.shape[0]):
        th = z[j] * inv
        out[j] = g * vexp(z[j] - lse) * (1 - th * th)


@njit(cache=True, error_model="numpy")
def _softcap_grad_row(row, lse, g, cap, out):
    inv = row.dtype.type(1.0) / cap
    for j in range(row.shape[0]):
        th = vtanh(row[j] * inv)
        out[j] = g * vexp(cap * th - lse) * (1 - th * th)


@njit(cache=True, error_model="numpy")
def _ce_backward_row(row, t, lse, g, ignore_index, cap, capped, i, out):
    if t == ignore_index:
        out[:] = 0
    elif cap > 0:
        inv = row.dtype.type(1.0) / cap
        if capped.shape[0] > 0:  # the forward kept z: no tanh here
            _capped_grad_row(capped[i], lse, g, inv, out)
            th = capped[i, t] * inv
        else:
            _softcap_grad_row(row, lse, g, cap, out)
            th = vtanh(row[t] * inv)
        out[t] -= g * (1 - th * th)
    else:
        _scaled_exp_shifted(row, lse, g, out)
        out[t] -= g


@njit(cache=True, error_model="numpy")
def _ce_forward_serial(logits, targets, ignore_index, cap, capped, losses, lse):
    for i in range(logits.shape[0]):
        _ce_forward_row(logits[i], targets[i], ignore_index, cap, capped, losses, lse, i)


@njit(cache=True, error_model="numpy", parallel=True)
def _ce_forward_parallel(logits, targets, ignore_index, cap, capped, losses, lse):
    for i in prange(logits.shape[0]):  # int64(i): the serial driver's index type, so the row compiles once
        _ce_forward_row(logits[i], targets[i], ignore_index, cap, capped, losses, lse, np.int64(i))


@njit(cache=True, error_model="numpy")
def _ce_backward_serial(logits, targets, lse, grad_losses, ignore_index, cap, capped, out):
    for i in range(logits.shape[0]):
        _ce_backward_row(logits[i], targets[i], lse[i], grad_losses[i], ignore_index, cap, capped, i, out[i])


@njit(cache=True, error_model="numpy", parallel=True)
def _ce_backward_parallel(logits, targets, lse, grad_losses, ignore_index, cap, capped, out):
    for i in prange(logits.shape[0]):
        _ce_backward_row(logits[i], targets[i], lse[i], grad_losses[i], ignore_index, cap, capped, np.int64(i), out[i])


def _prepare(logits, targets, ignore_index):
    _check_ce(logits, targets, ignore_index)
    return as_rows(logits), np.ascontiguousarray(targets, dtype=np.int64)


def _cap(softcap, dtype):
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive or None, got {softcap!r}")
    return dtype.type(0 if softcap is None else softcap)


def _capped_array(capped, logits):
    if capped is None:
        return np.empty((0, 0), logits.dtype)
    if capped.shape != logits.shape or capped.dtype != logits.dtype or not capped.flags.c_contiguous:
        raise ValueError(f"capped must be a C-contiguous {logits.dtype} array of shape {logits.shape}")
    return capped


def cross_entropy_forward(logits, targets, ignore_index=-1, softcap=None, capped_out=None):
    """Numba twin of cross_entropy_forward_reference. With a softcap, capped_out (an (N, V) array)
    receives softcap * tanh(logits / softcap), so that backward need not compute tanh again."""
    logits, targets = np.asarray(logits), np.asarray(targets)
    cap = _cap(softcap, logits.dtype)
    if not compiled(logits):
        if capped_out is not None and softcap is not None:
            _capped_array(capped_out, logits)[...] = _softcapped(logits, softcap)
        return cross_entropy_forward_reference(logits, targets, ignore_index, softcap)
    logits, targets = _prepare(logits, targets, ignore_index)
    losses = np.empty(logits.shape[0], logits.dtype)
    lse = np.empty(logits.shape[0], logits.dtype)
    kernel = pick(_ce_forward_serial, _ce_forward_parallel, logits.size, CROSS_ENTROPY_PARALLEL_MIN)
    kernel(logits, targets, np.int64(ignore_index), cap, _capped_array(capped_out, logits), losses, lse)
    return losses, lse


def cross_entropy_backward(logits, targets, lse, grad_losses, ignore_index=-1, softcap=None, capped=None):
    """Numba twin of cross_entropy_backward_reference; capped: the forward's capped_out, if it kept one."""
    logits, targets = np.asarray(logits), np.asarray(targets)
    cap = _cap(softcap, logits.dtype)
    if not compiled(logits):
        return cross_entropy_backward_reference(logits, targets, lse, grad_losses, ignore_index, softcap)
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
    kernel = pick(_ce_backward_serial, _ce_backward_parallel, logits.size, CROSS_ENTROPY_PARALLEL_MIN)
    kernel(logits, targets, lse, grad_losses, np.int64(ignore_index), cap, _capped_array(capped, logits), out)
    return out
