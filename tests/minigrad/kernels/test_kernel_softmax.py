"""The softmax and log-softmax kernels (_softmax.py) against their NumPy twins (hypothesis), the twins
against torch."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import DTYPES, LAYOUTS, SETTINGS, make_array, tol
from minigrad import kernels as K
from minigrad.kernels import _softmax


@st.composite
def rows_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=2))) + (draw(st.integers(1, 70)),)
    return shape, draw(DTYPES), draw(LAYOUTS), draw(st.integers(0, 2**32 - 1)), draw(st.floats(0.1, 30.0))


def _masked(rng, x):
    """Put -inf in some entries and make one row fully -inf (when there are several rows)."""
    x = np.array(x)
    x[rng.random(x.shape) < 0.2] = -np.inf
    if x.ndim > 1 and x.shape[0] > 1:
        x[0] = -np.inf
    return x


@SETTINGS
@given(rows_case(), st.booleans())
def test_softmax_family_matches_twin(case, mask):
    shape, dtype, layout, seed, scale = case
    rng = np.random.default_rng(seed)
    x = make_array(rng, shape, dtype, layout, scale)
    if mask:
        x = _masked(rng, x)
    grad = make_array(rng, shape, dtype, layout)
    with np.errstate(invalid="ignore"):
        for fwd, bwd in [("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")]:
            y = getattr(K, fwd)(x)
            y_ref = getattr(K, fwd + "_reference")(x)
            assert y.dtype == dtype and y.shape == shape
            np.testing.assert_allclose(y, y_ref, **tol(dtype, scale), equal_nan=True)
            g = getattr(K, bwd)(y_ref, grad)
            g_ref = getattr(K, bwd + "_reference")(y_ref, grad)
            np.testing.assert_allclose(g, g_ref, **tol(dtype, 10.0), equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_exp_range(dtype):
    """Rows [0, t] for t down to past underflow: exercises the kernel's own exp incl. subnormals."""
    t = np.linspace(-800.0 if dtype == np.float64 else -110.0, 0.0, 4001).astype(dtype)
    x = np.stack([np.zeros_like(t), t], axis=1)
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    np.testing.assert_allclose(K.softmax(x), K.softmax_reference(x), rtol=4 * eps, atol=tiny)
    # the kernel sums in float64, so log(1 + tiny) is not rounded to 0 as in the twin: eps-level atol
    np.testing.assert_allclose(K.log_softmax(x), K.log_softmax_reference(x), rtol=4 * eps, atol=4 * eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_finds_max_at_every_position(dtype):
    """A huge spread overflows exp unless the row max (lanes and tail alike) is found exactly."""
    for v in range(1, 20):
        x = np.full((v, v), -1000.0, dtype)
        x[np.arange(v), np.arange(v)] = 1000.0
        np.testing.assert_array_equal(K.softmax(x), np.eye(v, dtype=dtype))
        np.testing.assert_array_equal(K.log_softmax(x), np.where(np.eye(v) > 0, 0.0, -2000.0).astype(dtype))
        losses, lse = K.cross_entropy_forward(x, np.arange(v))
        np.testing.assert_array_equal(losses, np.zeros(v, dtype))


def test_softmax_all_masked_row_is_nan():
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32)
    with np.errstate(invalid="ignore"):
        for fn in (K.softmax, K.softmax_reference):
            y = fn(x)
            assert np.isnan(y[0]).all() and np.array_equal(y[1], [1.0, 0.0])


def test_softmax_twins_match_torch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 11)) * 5
    x[0, 1, :4] = -np.inf
    grad = rng.standard_normal(x.shape)
    for ours, ours_bwd, theirs in [
        (K.softmax_reference, K.softmax_backward_reference, torch.softmax),
        (K.log_softmax_reference, K.log_softmax_backward_reference, torch.log_softmax),
    ]:
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx, -1)
        ty.backward(torch.tensor(grad))
        y = ours(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours_bwd(y, grad), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_backward_rejects_mismatched_operands():
    with pytest.raises(ValueError, match="operands differ"):
        K.softmax_backward(np.ones((2, 3)), np.ones((2, 4)))


def test_parallel_drivers_match_twins():
    """Inputs from SOFTMAX_PARALLEL_MIN take the prange drivers; check those too (float32 only)."""
    rng = np.random.default_rng(5)
    n, v = 140, 1000
    assert n * v >= _softmax.SOFTMAX_PARALLEL_MIN
    x = (rng.standard_normal((n, v)) * 5).astype(np.float32)
    grad = rng.standard_normal((n, v)).astype(np.float32)
    close = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(K.softmax(x), K.softmax_reference(x), **close)
    np.testing.assert_allclose(K.log_softmax(x), K.log_softmax_reference(x), rtol=1e-5, atol=5e-5)
    y = K.softmax_reference(x)
    np.testing.assert_allclose(K.softmax_backward(y, grad), K.softmax_backward_reference(y, grad), **close)
    ly = K.log_softmax_reference(x)
    np.testing.assert_allclose(K.log_softmax_backward(ly, grad), K.log_softmax_backward_reference(ly, grad), **close)
