"""Kernels against their NumPy twins (hypothesis), and the twins against torch."""
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrad import kernels as K

SETTINGS = settings(deadline=None, max_examples=30)
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["c", "transposed", "strided", "broadcast"])


def _make(rng, shape, dtype, layout, scale=1.0):
    """Random array of `shape` whose memory layout is C, transposed, strided or stride-0 broadcast."""
    def draw(s):
        return (rng.standard_normal(s) * scale).astype(dtype)

    if layout == "transposed" and len(shape) >= 2:
        return np.swapaxes(draw(shape[:-2] + (shape[-1], shape[-2])), -1, -2)
    if layout == "strided":
        return draw(tuple(2 * n for n in shape))[tuple(slice(None, None, 2) for _ in shape)]
    if layout == "broadcast" and len(shape) >= 1:
        return np.broadcast_to(draw((1,) + tuple(shape[1:])), shape)
    return draw(shape)


def _tol(dtype, scale=1.0):
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-5 * scale)
    return dict(rtol=1e-12, atol=1e-12 * scale)


# ---------------------------------------------------------------- matmul

@st.composite
def matmul_case(draw):
    dims = st.integers(1, 9)
    n, k, m = draw(dims), draw(dims), draw(dims)
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    # each operand keeps a suffix of the batch dims, some of them squeezed to 1
    def own(b):
        b = b[len(b) - draw(st.integers(0, len(b))):]
        return tuple(1 if draw(st.booleans()) else d for d in b)
    return own(batch) + (n, k), own(batch) + (k, m)


@SETTINGS
@given(matmul_case(), DTYPES, LAYOUTS, LAYOUTS, st.integers(0, 2**32 - 1))
def test_matmul_matches_twin(shapes, dtype, layout_a, layout_b, seed):
    rng = np.random.default_rng(seed)
    a = _make(rng, shapes[0], dtype, layout_a)
    b = _make(rng, shapes[1], dtype, layout_b)
    out = K.matmul(a, b)
    ref = K.matmul_reference(a, b)
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_allclose(out, ref, **_tol(dtype, np.sqrt(shapes[0][-1])))
    grad = _make(rng, ref.shape, dtype, "c")
    for got, want, shape in zip(K.matmul_backward(a, b, grad), K.matmul_backward_reference(a, b, grad), shapes):
        assert got.shape == want.shape == shape
        np.testing.assert_allclose(got, want, **_tol(dtype, 10.0))


@pytest.mark.parametrize("layout", ["c", "transposed"])
def test_matmul_folded_gpt_like(layout):
    """The 3-D @ 2-D path (batch folded into one GEMM) at a non-trivial size."""
    rng = np.random.default_rng(0)
    a = _make(rng, (3, 40, 48), np.float32, layout)
    b = _make(rng, (48, 72), np.float32, "c")
    grad = _make(rng, (3, 40, 72), np.float32, "c")
    np.testing.assert_allclose(K.matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)
    ga, gb = K.matmul_backward(a, b, grad)
    np.testing.assert_allclose(ga, grad @ b.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb, np.einsum("bnk,bnm->km", a, grad), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape_a, shape_b", [((3, 1, 4, 5), (2, 5, 6)), ((4, 5), (2, 3, 5, 6)), ((2, 7, 3), (3, 4))])
def test_matmul_twin_matches_torch(shape_a, shape_b):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    out = ta @ tb
    grad = rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(grad))
    np.testing.assert_allclose(K.matmul_reference(a, b), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    ga, gb = K.matmul_backward_reference(a, b, grad)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [K.matmul, K.matmul_reference])
def test_matmul_inner_mismatch_raises(fn):
    with pytest.raises(ValueError, match="inner dimensions differ"):
        fn(np.ones((2, 3, 4)), np.ones((5, 6)))
    with pytest.raises(ValueError, match="ndim >= 2"):
        fn(np.ones(4), np.ones((4, 6)))


@pytest.mark.parametrize("fn", [K.matmul_backward, K.matmul_backward_reference])
def test_matmul_backward_bad_grad_raises(fn):
    with pytest.raises(ValueError, match="grad has shape"):
        fn(np.ones((2, 3, 4)), np.ones((4, 6)), np.ones((2, 3, 5)))


# ---------------------------------------------------------------- softmax

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
    x = _make(rng, shape, dtype, layout, scale)
    if mask:
        x = _masked(rng, x)
    grad = _make(rng, shape, dtype, layout)
    with np.errstate(invalid="ignore"):
        for fwd, bwd in [("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")]:
            y = getattr(K, fwd)(x)
            y_ref = getattr(K, fwd + "_reference")(x)
            assert y.dtype == dtype and y.shape == shape
            np.testing.assert_allclose(y, y_ref, **_tol(dtype, scale), equal_nan=True)
            g = getattr(K, bwd)(y_ref, grad)
            g_ref = getattr(K, bwd + "_reference")(y_ref, grad)
            np.testing.assert_allclose(g, g_ref, **_tol(dtype, 10.0), equal_nan=True)


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


# ---------------------------------------------------------------- cross-entropy

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
    logits = _make(rng, (n, v), dtype, layout, scale)
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
        np.testing.assert_allclose(losses, losses_ref, **_tol(dtype, scale), equal_nan=True)
        np.testing.assert_allclose(lse, lse_ref, **_tol(dtype, scale), equal_nan=True)
        grad_losses = rng.standard_normal(n).astype(dtype)
        g = K.cross_entropy_backward(logits, targets, lse_ref, grad_losses, ignore_index=ignore)
        g_ref = K.cross_entropy_backward_reference(logits, targets, lse_ref, grad_losses, ignore_index=ignore)
    assert g.dtype == dtype
    np.testing.assert_allclose(g, g_ref, **_tol(dtype, 10.0), equal_nan=True)
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


def test_kernels_reject_non_float_and_mismatched_inputs():
    with pytest.raises(ValueError, match="float32 or float64"):
        K.softmax(np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="float32 or float64"):
        K.cross_entropy_forward(np.ones((2, 3), np.float16), np.array([0, 1]))
    with pytest.raises(ValueError, match="operands differ"):
        K.softmax_backward(np.ones((2, 3)), np.ones((2, 4)))


def test_cross_entropy_backward_out_of_range_target_raises():
    logits = np.zeros((2, 5))
    with pytest.raises(ValueError, match="outside"):
        K.cross_entropy_backward(logits, np.array([0, 7]), np.zeros(2), np.ones(2))


def test_parallel_drivers_match_twins():
    """Inputs above PARALLEL_MIN_ELEMENTS take the prange drivers; check those too (float32 only)."""
    rng = np.random.default_rng(5)
    n, v = 140, 1000
    assert n * v >= importlib.import_module("minigrad.kernels.softmax").PARALLEL_MIN_ELEMENTS
    x = (rng.standard_normal((n, v)) * 5).astype(np.float32)
    grad = rng.standard_normal((n, v)).astype(np.float32)
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(K.softmax(x), K.softmax_reference(x), **tol)
    np.testing.assert_allclose(K.log_softmax(x), K.log_softmax_reference(x), rtol=1e-5, atol=5e-5)
    y = K.softmax_reference(x)
    np.testing.assert_allclose(K.softmax_backward(y, grad), K.softmax_backward_reference(y, grad), **tol)
    ly = K.log_softmax_reference(x)
    np.testing.assert_allclose(K.log_softmax_backward(ly, grad), K.log_softmax_backward_reference(ly, grad), **tol)
    targets = rng.integers(0, v, n)
    targets[::4] = -1
    losses, lse = K.cross_entropy_forward(x, targets)
    losses_ref, lse_ref = K.cross_entropy_forward_reference(x, targets)
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(lse, lse_ref, rtol=1e-5, atol=5e-5)
    g = grad[:, 0]
    np.testing.assert_allclose(
        K.cross_entropy_backward(x, targets, lse_ref, g), K.cross_entropy_backward_reference(x, targets, lse_ref, g), **tol
    )


# ---------------------------------------------------------------- concat

@st.composite
def concat_case(draw):
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    axis = draw(st.integers(-ndim, ndim - 1))
    lengths = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    layouts = [draw(LAYOUTS) for _ in lengths]
    return shape, axis, lengths, layouts, draw(DTYPES), draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(concat_case())
def test_concat_places_every_input(case):
    shape, axis, lengths, layouts, dtype, seed = case
    rng = np.random.default_rng(seed)
    arrays = []
    for n, layout in zip(lengths, layouts):
        s = list(shape)
        s[axis] = n
        arrays.append(_make(rng, tuple(s), dtype, layout))
    out = K.concat(arrays, axis)
    assert out.dtype == dtype and out.shape[axis] == sum(lengths)
    np.testing.assert_array_equal(out, K.concat_reference(arrays, axis))
    offset = 0
    for a in arrays:
        np.testing.assert_array_equal(np.take(out, np.arange(offset, offset + a.shape[axis]), axis=axis), a)
        offset += a.shape[axis]


def test_concat_kv_cache_shape():
    rng = np.random.default_rng(4)
    cache, new = rng.standard_normal((1, 6, 7, 64)), rng.standard_normal((1, 6, 1, 64))
    out = K.concat([cache, new], axis=2)
    assert out.shape == (1, 6, 8, 64)
    np.testing.assert_array_equal(out[:, :, :7], cache)
    np.testing.assert_array_equal(out[:, :, 7], new[:, :, 0])


def test_concat_mixed_dtypes_raise():
    with pytest.raises(ValueError, match="share a dtype"):
        K.concat([np.ones(2, np.float32), np.ones(2, np.float64)], 0)
