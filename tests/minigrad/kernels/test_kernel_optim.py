"""The fused AdamW and Muon-momentum updates (_optim.py) against their NumPy twins, bit for bit, and
against torch."""
import numpy as np
import pytest
import torch

from minigrad import kernels as K
from minigrad.kernels import _optim


@pytest.mark.parametrize("parallel_min", [1 << 40, 1])  # serial and prange drivers
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,step,wd", [((7,), 1, 0.0), ((33, 17), 5, 0.1), ((4, 3, 65), 200, 0.01)])
def test_adamw_update_matches_twin_bitwise(monkeypatch, parallel_min, dtype, shape, step, wd):
    monkeypatch.setattr(_optim, "ADAMW_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(step)
    p, g, m = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(shape)).astype(dtype)
    a, b = [x.copy() for x in (p, g, m, v)], [x.copy() for x in (p, g, m, v)]
    K.adamw_update_reference(*a, step, 3e-3, 0.8, 0.95, 1e-8, wd)
    K.adamw_update(*b, step, 3e-3, 0.8, 0.95, 1e-8, wd)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_adamw_update_twin_matches_torch():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((2, 40, 9)).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    tp = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, foreach=False)
    for step in range(1, 4):
        K.adamw_update(p, g, m, v, step, 1e-2, 0.9, 0.99, 1e-8, 0.1)
        tp.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_adamw_update_odd_layout_takes_twin():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((8, 6)).astype(np.float32)
    g = np.asfortranarray(rng.standard_normal((8, 6)).astype(np.float32))
    a, b = [p.copy(), g, np.zeros_like(p), np.zeros_like(p)], [p.copy(), g, np.zeros_like(p), np.zeros_like(p)]
    K.adamw_update_reference(*a, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    K.adamw_update(*b, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("parallel_min", [1 << 40, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.85, 0.95])
@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_update_matches_twin_bitwise(monkeypatch, parallel_min, dtype, momentum, nesterov):
    monkeypatch.setattr(_optim, "MOMENTUM_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(2)
    buf, g = (rng.standard_normal((13, 29)).astype(dtype) for _ in range(2))
    g0 = g.copy()
    b1, b2 = buf.copy(), buf.copy()
    u1 = K.momentum_update_reference(b1, g, momentum, nesterov)
    u2 = K.momentum_update(b2, g, momentum, nesterov)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(g, g0)  # the gradient is left intact
    assert (u2 is b2) == (not nesterov)
    # torch.lerp's form, to rounding (torch's vectorised lerp may fuse its multiply-add)
    tb = torch.tensor(buf).lerp_(torch.tensor(g), 1 - momentum)
    np.testing.assert_allclose(b2, tb.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7 if dtype == np.float32 else 1e-15)
