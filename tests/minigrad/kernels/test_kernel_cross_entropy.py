"""The fused cross-entropy kernels (_cross_entropy.py), with and without a softcap, against their NumPy
twins, and the twins against torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import DTYPES, LAYOUTS, SETTINGS, make_array, tol
from minigrad import kernels as K
from minigrad.kernels import _cross_entropy


@st.composite
def ce_case(draw):
    n, v = draw(st.integers(1, 20)), draw(st.integers(1, 70))
    ignore = draw(st.sampled_from([-1, -100, 0]))
    return n, v, ignore, draw(DTYPES), draw(LAYOUTS), draw(st.integers(0, 2**32 - 1)), draw(st.floats(0.1, 30.0))


@SETTINGS
@given(ce_case(), st.booleans())
def test_cross_entropy_matches_twin(case, mask):
    n, v, ignore, dtype, layout, seed, scale = case
    rng = np.random.default_rng(seed)
    logits = make_array(rng, (n, v), dtype, layout, scale)
    targets = rng.integers(0, v, n)
    targets[rng.random(n) < 0.3] = ignore
    if mask:
        # a masked row is only NaN-free when its target is ignored, as in the twin
        logits = np.array(logits)
        logits[rng.random((n, v)) < 0.2] = -np.inf
        logits[0] = -np.inf
        targets[0] = ignore
    with np.errstate(invalid="ignore"):
        losses, lse = K.cross_entropy_forward(logits, targets, ignore_index=ignore)
        losses_ref, lse_ref = K.cross_entropy_forward_reference(logits, targets, ignore_index=ignore)
        assert losses.dtype == lse.dtype == dtype
        np.testing.assert_allclose(losses, losses_ref, **tol(dtype, scale), equal_nan=True)
        np.testing.assert_allclose(lse, lse_ref, **tol(dtype, scale), equal_nan=True)
        grad_losses = rng.standard_normal(n).astype(dtype)
        g = K.cross_entropy_backward(logits, targets, lse_ref, grad_losses, ignore_index=ignore)
        g_ref = K.cross_entropy_backward_reference(logits, targets, lse_ref, grad_losses, ignore_index=ignore)
    assert g.dtype == dtype
    np.testing.assert_allclose(g, g_ref, **tol(dtype, 10.0), equal_nan=True)
    assert not g[targets == ignore].any()


def _reduce(losses, targets, reduction, ignore):
    """What the ops layer does with per-row losses, and the matching grad_losses."""
    count = np.sum(targets != ignore)
    if reduction == "none":
        return losses, np.ones_like(losses)
    if reduction == "sum":
        return losses.sum(), np.ones_like(losses)
    with np.errstate(invalid="ignore", divide="ignore"):
        return losses.sum() / count, np.full_like(losses, 1.0 / count)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("all_ignored", [False, True])
def test_cross_entropy_twin_matches_torch(reduction, all_ignored):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((9, 13)) * 3
    targets = rng.integers(0, 13, 9)
    targets[::3] = -100
    if all_ignored:
        targets[:] = -100
    tl = torch.tensor(logits, requires_grad=True)
    tloss = F.cross_entropy(tl, torch.tensor(targets), ignore_index=-100, reduction=reduction)
    tloss.backward(torch.ones_like(tloss))
    losses, lse = K.cross_entropy_forward_reference(logits, targets, ignore_index=-100)
    loss, grad_losses = _reduce(losses, targets, reduction, -100)
    np.testing.assert_allclose(loss, tloss.detach().numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
    grad = K.cross_entropy_backward_reference(logits, targets, lse, grad_losses, ignore_index=-100)
    if all_ignored and reduction == "mean":
        assert np.isnan(loss)
    # all-ignored mean: grad_losses are inf, yet ignored rows must come back exactly 0 like torch's
    np.testing.assert_allclose(grad, tl.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [K.cross_entropy_forward, K.cross_entropy_forward_reference])
@pytest.mark.parametrize("bad", [5, -2, 100])
def test_cross_entropy_out_of_range_target_raises(fn, bad):
    logits = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match=f"target {bad} at row 1 is outside"):
        fn(logits, np.array([0, bad, -1]), ignore_index=-1)


@pytest.mark.parametrize("fn", [K.cross_entropy_forward, K.cross_entropy_forward_reference])
def test_cross_entropy_needs_a_class(fn):
    with pytest.raises(ValueError, match="at least one class"):
        fn(np.zeros((2, 0)), np.array([-1, -1]))


def test_cross_entropy_backward_out_of_range_target_raises():
    logits = np.zeros((2, 5))
    with pytest.raises(ValueError, match="outside"):
        K.cross_entropy_backward(logits, np.array([0, 7]), np.zeros(2), np.ones(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, v", [(6, 11), (300, 1000)])  # the second is big enough for the parallel driver
def test_softcap_cross_entropy_matches_twin(dtype, n, v):
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((n, v)) * 20).astype(dtype)  # past the cap, where tanh bends
    targets = rng.integers(0, v, n)
    targets[::5] = -1
    losses, lse = K.cross_entropy_forward(logits, targets, -1, softcap=15.0)
    ref_losses, ref_lse = K.cross_entropy_forward_reference(logits, targets, -1, softcap=15.0)
    np.testing.assert_allclose(losses, ref_losses, **tol(dtype))
    np.testing.assert_allclose(lse, ref_lse, **tol(dtype))
    grad_losses = rng.standard_normal(n).astype(dtype)
    got = K.cross_entropy_backward(logits, targets, lse, grad_losses, -1, softcap=15.0)
    want = K.cross_entropy_backward_reference(logits, targets, ref_lse, grad_losses, -1, softcap=15.0)
    np.testing.assert_allclose(got, want, **tol(dtype))
    assert np.all(got[::5] == 0)
    # keeping the capped logits in the forward gives the same loss and a backward without tanh
    capped = np.empty_like(logits)
    kept_losses, kept_lse = K.cross_entropy_forward(logits, targets, -1, softcap=15.0, capped_out=capped)
    np.testing.assert_array_equal(kept_losses, losses)
    np.testing.assert_allclose(capped, dtype(15.0) * np.tanh(logits / dtype(15.0)), **tol(dtype))
    kept = K.cross_entropy_backward(logits, targets, kept_lse, grad_losses, -1, softcap=15.0, capped=capped)
    np.testing.assert_allclose(kept, want, **tol(dtype))


def test_capped_array_must_fit():
    logits = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="capped"):
        K.cross_entropy_forward(logits, np.zeros(2, np.int64), softcap=15.0, capped_out=np.empty((3, 2), np.float32))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_softcap_must_be_positive(bad):
    with pytest.raises(ValueError, match="softcap"):
        K.cross_entropy_forward(np.ones((2, 3), np.float32), np.zeros(2, np.int64), softcap=bad)


def test_float32_tanh_in_kernels_matches_numpy():
    from numba import njit

    from minigrad.kernels._cross_entropy import vtanh

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = vtanh(x[i])

    x = np.concatenate([np.linspace(-12, 12, 20001), [0.0, -0.0, 0.625, -0.625, 1e-8, 50, -50, 1e30, -np.inf,
                                                      np.inf]]).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    np.testing.assert_allclose(out, np.tanh(x), rtol=4e-7, atol=1e-7)
    nan = np.array([np.nan], np.float32)
    apply(nan, nan)
    assert np.isnan(nan[0])


def test_parallel_drivers_match_twins():
    """Inputs from CROSS_ENTROPY_PARALLEL_MIN take the prange drivers; check those too (float32 only)."""
    rng = np.random.default_rng(5)
    n, v = 140, 1000
    assert n * v >= _cross_entropy.CROSS_ENTROPY_PARALLEL_MIN
    x = (rng.standard_normal((n, v)) * 5).astype(np.float32)
    grad = rng.standard_normal((n, v)).astype(np.float32)
    targets = rng.integers(0, v, n)
    targets[::4] = -1
    losses, lse = K.cross_entropy_forward(x, targets)
    losses_ref, lse_ref = K.cross_entropy_forward_reference(x, targets)
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(lse, lse_ref, rtol=1e-5, atol=5e-5)
    g = grad[:, 0]
    np.testing.assert_allclose(
        K.cross_entropy_backward(x, targets, lse_ref, g), K.cross_entropy_backward_reference(x, targets, lse_ref, g),
        rtol=1e-5, atol=1e-5
    )
