"""The fused Functions of ops.py (Rotary, ReluSquared, softcapped CrossEntropy, Linear) end to end,
values and gradients, against torch composites."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from minigrad import Tensor
from minigrad.nn import functional as F


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _rotary_composite(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rotary_matches_torch_composite(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3, 8)).astype(dtype)
    cos, sin = rng.standard_normal((2, 1, 5, 1, 4)).astype(dtype)
    mx = Tensor(x, requires_grad=True)
    y = F.rotary(mx, Tensor(cos), Tensor(sin))
    assert type(y._ctx).__name__ == "Rotary"
    grad = rng.standard_normal(y.shape).astype(dtype)
    y.backward(grad)
    tx = torch.tensor(x, requires_grad=True)
    ty = _rotary_composite(tx, torch.tensor(cos), torch.tensor(sin))
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), **_tol(dtype))


def test_rotary_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        F.rotary(Tensor(np.ones((1, 3), np.float32)), Tensor(np.ones(1, np.float32)), Tensor(np.ones(1, np.float32)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_squared_matches_torch(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 7)).astype(dtype)
    x[0, :3] = 0  # the kink: gradient 0 there, as torch's relu
    mx = Tensor(x, requires_grad=True)
    y = F.relu_squared(mx)
    grad = rng.standard_normal(y.shape).astype(dtype)
    y.backward(grad)
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.relu(tx).square()
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), **_tol(dtype))


def test_softcap_cross_entropy_matches_torch_composite():
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((9, 13)) * 20).astype(np.float32)
    targets = rng.integers(0, 13, 9)
    targets[2] = -1
    ml = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ml, targets, ignore_index=-1, softcap=15.0)
    loss.backward()
    tl = torch.tensor(logits, requires_grad=True)
    tloss = TF.cross_entropy(15.0 * torch.tanh(tl / 15.0), torch.tensor(targets), ignore_index=-1)
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    np.testing.assert_allclose(ml.grad, tl.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 6), (7, 6)])
def test_linear_function_matches_torch(shape):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    mx, mw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = F.linear(mx, mw)
    assert type(y._ctx).__name__ == "Linear"
    grad = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(grad)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = TF.linear(tx, tw)
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mw.grad, tw.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert mw.grad.flags.c_contiguous
