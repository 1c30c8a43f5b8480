"""Fused in-place optimizer updates: AdamW (and Muon's momentum/nesterov lerps) in one sweep per parameter.

The vectorised NumPy update spends a temporary and a full sweep per operator (weight decay, the
two moments, the square root, the divisions, the step); the kernel reads each element of the
parameter, gradient and moments once and writes them back once. Arithmetic stays in the arrays'
dtype, operator for operator as in the twin (and torch.optim.AdamW), so results agree to rounding.
"""
import math

import numpy as np
from numba import njit, prange

from ._common import COMPILED_DTYPES, pick

# Parallel drivers from this many elements (AdamW does more arithmetic per element than Muon's
# momentum lerps, so it splits sooner). Re-measure: python benchmarks/bench_thresholds.py adamw momentum
ADAMW_PARALLEL_MIN = 1 << 12
MOMENTUM_PARALLEL_MIN = 1 << 16


def adamw_update_reference(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step in place on p (parameter), m and v (moments) from gradient g; step counts from 1."""
    if weight_decay != 0:
        p *= 1 - lr * weight_decay  # decoupled: shrink weights, not the gradient
    m += (1 - beta1) * (g - m)
    v *= beta2
    v += (1 - beta2) * (g * g)
    step_size = lr / (1 - beta1 ** step)
    denom = np.sqrt(v)
    denom /= math.sqrt(1 - beta2 ** step)
    denom += eps
    update = m / denom
    update *= step_size
    p -= update


@njit(cache=True, error_model="numpy", inline="always")
def _adamw_elem(p, g, m, v, i, decay, one_m_b1, beta2, one_m_b2, bc2_sqrt, eps, step_size, use_decay):
    pi = p[i] * decay if use_decay else p[i]
    gi = g[i]
    mi = m[i] + one_m_b1 * (gi - m[i])
    vi = v[i] * beta2 + one_m_b2 * (gi * gi)
    m[i] = mi
    v[i] = vi
    denom = np.sqrt(vi) / bc2_sqrt + eps
    p[i] = pi - (mi / denom) * step_size


@njit(cache=True, error_model="numpy")
def _adamw_serial(p, g, m, v, decay, one_m_b1, beta2, one_m_b2, bc2_sqrt, eps, step_size, use_decay):
    for i in range(p.shape[0]):
        _adamw_elem(p, g, m, v, i, decay, one_m_b1, beta2, one_m_b2, bc2_sqrt, eps, step_size, use_decay)


@njit(cache=True, error_model="numpy", parallel=True)
def _adamw_parallel(p, g, m, v, decay, one_m_b1, beta2, one_m_b2, bc2_sqrt, eps, step_size, use_decay):
    for i in prange(p.shape[0]):
        _adamw_elem(p, g, m, v, i, decay, one_m_b1, beta2, one_m_b2, bc2_sqrt, eps, step_size, use_decay)


def _flat(*arrays):
    """1-D views of same-shape, same-dtype, C-contiguous float32/float64 arrays, or None."""
    a0 = arrays[0]
    if a0.dtype not in COMPILED_DTYPES or a0.size == 0:
        return None
    for a in arrays:
        if a.shape != a0.shape or a.dtype != a0.dtype or not a.flags.c_contiguous:
            return None
    return [a.reshape(-1) for a in arrays]


def adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Numba twin of adamw_update_reference; other dtypes or layouts take the twin."""
    flat = _flat(p, g, m, v)
    if flat is None or not p.flags.writeable:
        return adamw_update_reference(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay)
    t = p.dtype.type
    # the scalars the twin's operators would see, rounded to the array dtype as NumPy does
    kernel = pick(_adamw_serial, _adamw_parallel, p.size, ADAMW_PARALLEL_MIN)
    kernel(*flat, t(1 - lr * weight_decay), t(1 - beta1), t(beta2), t(1 - beta2),
           t(math.sqrt(1 - beta2 ** step)), t(eps), t(lr / (1 - beta1 ** step)), weight_decay != 0)


def lerp_reference(start, end, weight):
    """torch.lerp's formula (it switches form at weight 0.5 for accuracy)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def momentum_update_reference(buf, g, momentum, nesterov):
    """Muon's momentum in place: buf <- lerp(buf, g, 1 - momentum); returns the update direction,
    lerp(g, buf, momentum) (a fresh array) for Nesterov, else buf itself."""
    buf[...] = lerp_reference(buf, g, 1 - momentum)
    return lerp_reference(g, buf, momentum) if nesterov else buf


@njit(cache=True, error_model="numpy", inline="always")
def _lerp(a, b, w, w_c, small):
    if small:
        return a + w * (b - a)
    return b - (b - a) * w_c


@njit(cache=True, error_model="numpy", inline="always")
def _momentum_elem(buf, g, out, i, wb, wb_c, b_small, wo, wo_c, o_small, nesterov):
    b = _lerp(buf[i], g[i], wb, wb_c, b_small)
    buf[i] = b
    if nesterov:
        out[i] = _lerp(g[i], b, wo, wo_c, o_small)


@njit(cache=True, error_model="numpy")
def _momentum_serial(buf, g, out, wb, wb_c, b_small, wo, wo_c, o_small, nesterov):
    for i in range(buf.shape[0]):
        _momentum_elem(buf, g, out, i, wb, wb_c, b_small, wo, wo_c, o_small, nesterov)


@njit(cache=True, error_model="numpy", parallel=True)
def _momentum_parallel(buf, g, out, wb, wb_c, b_small, wo, wo_c, o_small, nesterov):
    for i in prange(buf.shape[0]):
        _momentum_elem(buf, g, out, i, wb, wb_c, b_small, wo, wo_c, o_small, nesterov)


def momentum_update(buf, g, momentum, nesterov):
    """Numba twin of momentum_update_reference; other dtypes or layouts take the twin."""
    flat = _flat(buf, g)
    if flat is None or not buf.flags.writeable:
        return momentum_update_reference(buf, g, momentum, nesterov)
    t = buf.dtype.type
    out = np.empty_like(buf) if nesterov else buf
    wb = 1 - momentum
    kernel = pick(_momentum_serial, _momentum_parallel, buf.size, MOMENTUM_PARALLEL_MIN)
    kernel(flat[0], flat[1], out.reshape(-1), t(wb), t(1 - wb), abs(wb) < 0.5,
           t(momentum), t(1 - momentum), abs(momentum) < 0.5, bool(nesterov))
    return out
